"""Model bundle: the trained networks as ONNX graphs plus a manifest, on disk or as bytes.

A bundle directory holds ``manifest.json``, ``dynamics.onnx``, ``actor.onnx`` and
``critic.onnx``. The same files travel as an uncompressed tar on the ``model`` topic, there
with an optional ``signature.json`` (``core.signing``: the trainer's Ed25519 signature of the
manifest; a bundle directory on disk is unsigned and any signature.json in it is ignored).
The planner never trusts a bundle it did not verify (``core.bundle_verify``).

torch is imported only inside the export functions: the planner process never loads it.
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from loop_ros.core.config import MAX_ENSEMBLE_SIZE

FORMAT = "loop_ros.bundle"
FORMAT_VERSION = 1
OPSET = 17
MANIFEST = "manifest.json"
BATCH = "B"
"""The dynamic axis of every graph; K (elites), S (obs_dim) and A (act_dim) are fixed."""

CONTRACT: dict[str, dict[str, list[tuple[str, tuple[str, ...]]]]] = {
    "dynamics.onnx": {
        "inputs": [("state", ("K", "B", "S")), ("action", ("K", "B", "A")), ("noise", ("K", "B", "S"))],
        "outputs": [("next_state", ("K", "B", "S")), ("reward", ("K", "B"))],
    },
    "actor.onnx": {
        "inputs": [("state", ("B", "S")), ("noise", ("B", "A"))],
        "outputs": [("action", ("B", "A"))],
    },
    "critic.onnx": {
        "inputs": [("state", ("B", "S")), ("action", ("B", "A"))],
        "outputs": [("q", ("B",))],
    },
}
"""ONNX IO of each graph, in order: (name, symbolic shape); all tensors float32."""

GRAPH_FILES = tuple(CONTRACT)
BUNDLE_FILES = (MANIFEST, *GRAPH_FILES)
PROVENANCE_KEYS = ("command", "steps", "seed", "eval_return", "wall_time_s")
MAX_FILE_BYTES = 64 << 20
"""Largest accepted member; the paper's HalfCheetah dynamics (K=5, 4x200) is ~3 MB."""
MAX_BUNDLE_BYTES = 4 * MAX_FILE_BYTES
PROBE_BATCH = 8
SIGNATURE = "signature.json"
"""Optional member of the bundle bytes: the signature of the manifest (``core.signing``)."""
MAX_SIGNATURE_BYTES = 4096
"""Largest accepted signature.json (one is about 150 bytes)."""
_MANIFEST_TYPES = {
    "format": str, "format_version": int, "version": int, "task": str, "obs_dim": int, "act_dim": int,
    "ensemble_size": int, "action_low": list, "action_high": list, "sha256": dict, "io": dict,
    "opset": int, "provenance": dict, "extra": dict,
}


class BundleError(ValueError):
    """A bundle that must not be used; the message says exactly what is wrong."""


@dataclass(frozen=True)
class Bundle:
    """A bundle in memory: the parsed manifest and the raw bytes of every file.

    ``files`` maps each name of ``BUNDLE_FILES`` (manifest included, as written) to its
    bytes, so sessions are built from bytes and the bundle re-serialises unchanged.
    ``signature`` is the ``signature.json`` that came with the bytes, if any (not checked here).
    """

    manifest: dict[str, Any]
    files: dict[str, bytes]
    signature: bytes | None = None

    @property
    def version(self) -> int:
        return self.manifest["version"]

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def obs_dim(self) -> int:
        return self.manifest["obs_dim"]

    @property
    def act_dim(self) -> int:
        return self.manifest["act_dim"]

    @property
    def ensemble_size(self) -> int:
        return self.manifest["ensemble_size"]

    @property
    def action_low(self) -> np.ndarray:
        return np.asarray(self.manifest["action_low"], dtype=np.float32)

    @property
    def action_high(self) -> np.ndarray:
        return np.asarray(self.manifest["action_high"], dtype=np.float32)


def contract_shape(symbols: tuple[str, ...], manifest: Mapping[str, Any], batch: int | str) -> tuple:
    """``("K", "B", "S")`` -> ``(ensemble_size, batch, obs_dim)`` with the manifest's dims
    (``batch=BATCH`` keeps the batch axis symbolic)."""
    dims = {"K": manifest["ensemble_size"], "S": manifest["obs_dim"], "A": manifest["act_dim"], BATCH: batch}
    return tuple(dims[s] for s in symbols)


# ---------------------------------------------------------------- export (trainer side, torch)


def export_bundle(
    out_dir: str | os.PathLike,
    dynamics_module,
    actor_module,
    critic_module,
    *,
    task: str,
    obs_dim: int,
    act_dim: int,
    ensemble_size: int,
    action_low,
    action_high,
    provenance: Mapping[str, Any],
    version: int,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Export three torch modules implementing ``CONTRACT`` as a bundle directory.

    ``provenance`` must hold ``PROVENANCE_KEYS`` (command, steps, seed, eval_return,
    wall_time_s); the creation time is added. ``extra`` is free-form (elite indices,
    normaliser statistics); the normaliser itself is inside the dynamics graph. The
    bundle is written, not verified: the reader verifies, so a bad model is refused
    where it would be used.
    """
    missing = [key for key in PROVENANCE_KEYS if key not in provenance]
    if missing:
        raise ValueError(f"provenance lacks {missing}")
    low, high = _float_list(action_low), _float_list(action_high)
    if len(low) != act_dim or len(high) != act_dim or not all(lo < hi for lo, hi in zip(low, high)):
        raise ValueError(f"action bounds {low}, {high} must be {act_dim} pairs with low < high")
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "version": int(version), "task": task,
        "obs_dim": int(obs_dim), "act_dim": int(act_dim), "ensemble_size": int(ensemble_size),
        "action_low": low, "action_high": high, "sha256": {}, "io": _contract_json(), "opset": OPSET,
        "provenance": {**provenance, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "extra": dict(extra or {}),
    }
    modules = dict(zip(GRAPH_FILES, (dynamics_module, actor_module, critic_module)))
    files = {name: export_graph(module, name, manifest) for name, module in modules.items()}
    manifest["sha256"] = {name: sha256_hex(data) for name, data in files.items()}
    # numpy values (e.g. normaliser statistics in ``extra``) are written as lists
    files[MANIFEST] = json.dumps(manifest, indent=2, default=lambda value: np.asarray(value).tolist()).encode()
    return write_bundle(Bundle(manifest, files), out_dir)


def export_graph(module, name: str, dims: Mapping[str, Any]) -> bytes:
    """ONNX bytes of one contract graph (``name`` in ``GRAPH_FILES``) via the legacy exporter
    (fast, weights embedded, no .data file); ``dims`` holds obs_dim, act_dim, ensemble_size."""
    import torch

    spec, manifest = CONTRACT[name], dims
    device = next(module.parameters(), torch.zeros(())).device
    # B = 2, not 1: the tracer may specialise a batch of 1 despite dynamic_axes.
    args = tuple(torch.zeros(contract_shape(shape, manifest, 2), device=device) for _, shape in spec["inputs"])
    named = spec["inputs"] + spec["outputs"]
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript", DeprecationWarning)
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        torch.onnx.export(
            module, args, buffer, input_names=[n for n, _ in spec["inputs"]],
            output_names=[n for n, _ in spec["outputs"]],
            dynamic_axes={name: {shape.index(BATCH): BATCH} for name, shape in named},
            opset_version=OPSET, dynamo=False,
        )
    return buffer.getvalue()


# ---------------------------------------------------------------- files, bytes


def read_bundle(directory: str | os.PathLike) -> Bundle:
    """Read a bundle directory (not verified: call ``verify_bundle``)."""
    directory = Path(directory)
    files = {}
    for name in BUNDLE_FILES:
        path = directory / name
        if not path.is_file():
            raise BundleError(f"missing file {name} in bundle {directory}")
        files[name] = path.read_bytes()
    return bundle_from_files(files)


def write_bundle(bundle: Bundle, directory: str | os.PathLike) -> Path:
    """Write the files of ``bundle`` as the directory ``directory``, replacing it whole.

    The files go into a new sibling ``.<name>.tmp-<id>``, each synced to disk with the
    directory, which is then renamed into place; an existing ``directory`` is first renamed
    aside to ``.<name>.old-<id>`` and removed after. So a process killed at any moment leaves
    ``directory`` holding the old bundle or the new one, whole, never graphs that do not
    match the manifest (leftover siblings are removed by the next write). The one window is
    between the two renames (two system calls): ``directory`` does not exist then, and a
    reader gets ``BundleError`` ("missing file ..."): the planner refuses it and keeps its
    model, and a reader that retries finds the new bundle; a process killed in that window
    leaves the old bundle in the ``.old`` sibling. A reader that reads the files one by one
    across the swap may mix two bundles: the manifest's sha256 of each graph refuses that
    (``verify_bundle``). A directory holding anything but bundle files is not replaced
    (``BundleError``): it is not a bundle this function wrote.
    """
    given, directory = Path(directory), Path(directory).resolve()  # a symlink keeps pointing at the bundle
    if directory.is_dir():
        foreign = sorted(set(os.listdir(directory)) - {*BUNDLE_FILES, SIGNATURE, "plan.onnx"}
                         - {f".{name}.tmp" for name in BUNDLE_FILES})
        if foreign:
            raise BundleError(f"not replacing {given}: it holds {foreign}, which are no bundle files")
    directory.parent.mkdir(parents=True, exist_ok=True)
    for kind in ("tmp", "old"):  # what a killed writer left
        for leftover in directory.parent.glob(f".{glob.escape(directory.name)}.{kind}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    suffix = f"{os.getpid()}-{os.urandom(4).hex()}"
    fresh, old = (directory.with_name(f".{directory.name}.{kind}-{suffix}") for kind in ("tmp", "old"))
    fresh.mkdir()
    for name in (*GRAPH_FILES, MANIFEST):
        with open(fresh / name, "wb") as f:
            f.write(bundle.files[name])
            f.flush()
            os.fsync(f.fileno())
    fsync_directory(fresh)
    if directory.exists():
        directory.rename(old)
    fresh.rename(directory)
    fsync_directory(directory.parent)
    shutil.rmtree(old, ignore_errors=True)
    return given


def fsync_directory(path: Path) -> None:
    """Sync a directory's entries (created files, renames) to disk, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def bundle_to_bytes(source: Bundle | str | os.PathLike) -> bytes:
    """Uncompressed tar of the bundle files in ``BUNDLE_FILES`` order (then ``signature.json``
    when the bundle carries one), zero timestamps: the same bundle always gives the same bytes."""
    bundle = source if isinstance(source, Bundle) else read_bundle(source)
    members = {name: bundle.files[name] for name in BUNDLE_FILES}
    if bundle.signature is not None:
        members[SIGNATURE] = bundle.signature
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def bundle_from_bytes(data: bytes) -> Bundle:
    """Parse ``bundle_to_bytes`` output in memory; nothing is extracted to disk.

    Only regular members with the flat names of ``BUNDLE_FILES`` are accepted, each at
    most ``MAX_FILE_BYTES``, and an optional ``signature.json`` of at most
    ``MAX_SIGNATURE_BYTES``; anything else is refused (not verified: call ``verify_bundle``,
    and for the signature ``core.signing.verify_bundle_trust``).
    """
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle of {len(data)} bytes exceeds {MAX_BUNDLE_BYTES}")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                _check_member(member, files)
                files[member.name] = tar.extractfile(member).read()
    except tarfile.TarError as error:
        raise BundleError(f"bundle bytes are not a readable uncompressed tar: {error}") from error
    signature = files.pop(SIGNATURE, None)
    return bundle_from_files(files, signature)


def _check_member(member: tarfile.TarInfo, seen: Mapping[str, bytes]) -> None:
    name = member.name
    if "/" in name or "\\" in name or ".." in name:
        raise BundleError(f"refused tar member {name!r}: only flat file names are allowed")
    if not member.isfile():
        raise BundleError(f"refused tar member {name!r}: not a regular file")
    if name not in BUNDLE_FILES and name != SIGNATURE:
        raise BundleError(f"refused tar member {name!r}: expected only {list(BUNDLE_FILES)} and {SIGNATURE}")
    if name in seen:
        raise BundleError(f"refused tar member {name!r}: duplicate")
    limit = MAX_SIGNATURE_BYTES if name == SIGNATURE else MAX_FILE_BYTES
    if member.size > limit:
        raise BundleError(f"refused tar member {name!r}: {member.size} bytes exceeds {limit}")


def bundle_from_files(files: dict[str, bytes], signature: bytes | None = None) -> Bundle:
    missing = [name for name in BUNDLE_FILES if name not in files]
    if missing:
        raise BundleError(f"missing file(s) {missing} in bundle")
    return Bundle(_parse_manifest(files[MANIFEST]), files, signature)


def _parse_manifest(raw: bytes) -> dict[str, Any]:
    """The manifest as a dict whose fields all exist with the right types."""
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{MANIFEST} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{MANIFEST} format_version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}")
    for key, kind in _MANIFEST_TYPES.items():
        if not isinstance(manifest.get(key), kind) or (kind is int and not _is_number(manifest[key])):
            raise BundleError(f"{MANIFEST} field {key!r} is missing or not of type {kind.__name__}")
    if manifest["io"] != _contract_json():
        raise BundleError(f"{MANIFEST} IO contract differs from this loop_ros version's: {manifest['io']}")
    if min(manifest["obs_dim"], manifest["act_dim"], manifest["ensemble_size"]) < 1:
        raise BundleError(f"{MANIFEST} dims must be >= 1")
    if manifest["ensemble_size"] > MAX_ENSEMBLE_SIZE:  # the planner's work ceiling assumes at most this K
        raise BundleError(f"{MANIFEST} ensemble_size {manifest['ensemble_size']} exceeds {MAX_ENSEMBLE_SIZE}")
    for key in ("action_low", "action_high"):
        values = manifest[key]
        if len(values) != manifest["act_dim"] or not all(_is_number(v) for v in values):
            raise BundleError(f"{MANIFEST} {key} must be {manifest['act_dim']} numbers (act_dim), got {values}")
    return manifest


def _contract_json() -> dict[str, Any]:
    """``CONTRACT`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(CONTRACT))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _float_list(values) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


# ---------------------------------------------------------------- verification

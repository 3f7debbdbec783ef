"""Model bundle: export -> read -> verify, bytes round trip, and every refusal with its reason."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from loop_ros.core import bundle as bundle_mod
from loop_ros.core.bundle import (
    Bundle,
    BundleError,
    bundle_from_bytes,
    bundle_to_bytes,
    read_bundle,
    write_bundle,
)
from loop_ros.core.bundle_verify import verify_bundle


def with_file(bundle: Bundle, name: str, data: bytes, fix_hash: bool) -> Bundle:
    """``bundle`` with one graph replaced; ``fix_hash`` also updates its sha256 in the manifest."""
    manifest = json.loads(json.dumps(bundle.manifest))
    if fix_hash:
        manifest["sha256"][name] = hashlib.sha256(data).hexdigest()
    return Bundle(manifest, {**bundle.files, name: data, "manifest.json": json.dumps(manifest).encode()})


def tar_of(members) -> bytes:
    """A tar of ``(name, bytes)`` pairs, in order (names may repeat)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_export_read_verify_round_trip(export_tiny_bundle):
    path = export_tiny_bundle(obs_dim=6, act_dim=2, ensemble_size=3, version=7)
    bundle = read_bundle(path)
    verify_bundle(bundle, {"task": "rc_car", "obs_dim": 6, "act_dim": 2, "ensemble_size": 3})

    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest == bundle.manifest
    assert (bundle.version, bundle.task, bundle.obs_dim, bundle.act_dim, bundle.ensemble_size) == (7, "rc_car", 6, 2, 3)
    assert manifest["action_low"] == [-1.0, -1.0] and manifest["action_high"] == [1.0, 1.0]
    for name in ("dynamics.onnx", "actor.onnx", "critic.onnx"):
        assert manifest["sha256"][name] == hashlib.sha256((path / name).read_bytes()).hexdigest()
    assert manifest["io"]["dynamics.onnx"]["inputs"] == [["state", ["K", "B", "S"]], ["action", ["K", "B", "A"]],
                                                         ["noise", ["K", "B", "S"]]]
    assert manifest["provenance"]["command"] == "pytest" and manifest["provenance"]["created"].endswith("Z")
    assert not list(path.glob("*.tmp")) and not list(path.glob("*.data"))


def test_export_refuses_incomplete_provenance(tmp_path, tiny_modules):
    with pytest.raises(ValueError, match="provenance lacks \\['eval_return', 'wall_time_s'\\]"):
        bundle_mod.export_bundle(
            tmp_path, *tiny_modules(6, 2, 3), task="rc_car", obs_dim=6, act_dim=2, ensemble_size=3,
            action_low=[-1, -1], action_high=[1, 1], provenance={"command": "x", "steps": 1, "seed": 0}, version=1,
        )


def test_bytes_round_trip_equals_directory(export_tiny_bundle, tmp_path):
    path = export_tiny_bundle()
    data = bundle_to_bytes(path)
    assert data == bundle_to_bytes(read_bundle(path))  # deterministic: no timestamps, fixed order
    restored = bundle_from_bytes(data)
    assert restored == read_bundle(path)
    copy = write_bundle(restored, tmp_path / "copy")
    for name in ("manifest.json", "dynamics.onnx", "actor.onnx", "critic.onnx"):
        assert (copy / name).read_bytes() == (path / name).read_bytes()


def test_missing_file_is_named(export_tiny_bundle):
    path = export_tiny_bundle()
    (path / "actor.onnx").unlink()
    with pytest.raises(BundleError, match="missing file actor.onnx"):
        read_bundle(path)
    with pytest.raises(BundleError, match=r"missing file\(s\) \['critic.onnx'\]"):
        bundle_from_bytes(tar_of([("manifest.json", b"{}"), ("dynamics.onnx", b""), ("actor.onnx", b"")]))


def test_flipped_byte_is_a_sha_mismatch(export_tiny_bundle):
    bundle = read_bundle(export_tiny_bundle())
    data = bytearray(bundle.files["dynamics.onnx"])
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(BundleError, match="sha256 mismatch for dynamics.onnx"):
        verify_bundle(with_file(bundle, "dynamics.onnx", bytes(data), fix_hash=False))


def test_garbage_with_matching_hash_is_unparseable(export_tiny_bundle):
    bundle = read_bundle(export_tiny_bundle())
    with pytest.raises(BundleError, match="cannot parse critic.onnx as an ONNX model"):
        verify_bundle(with_file(bundle, "critic.onnx", b"not an onnx model" * 10, fix_hash=True))


def test_graph_with_wrong_io_names_is_refused(export_tiny_bundle):
    bundle = read_bundle(export_tiny_bundle())
    actor_as_critic = with_file(bundle, "critic.onnx", bundle.files["actor.onnx"], fix_hash=True)
    with pytest.raises(BundleError, match=r"critic.onnx inputs are \['state', 'noise'\], the contract says "
                                          r"\['state', 'action'\]"):
        verify_bundle(actor_as_critic)


def test_graph_dims_must_match_the_manifest(export_tiny_bundle):
    bundle = read_bundle(export_tiny_bundle(obs_dim=6))
    manifest = {**bundle.manifest, "obs_dim": 7}
    with pytest.raises(BundleError, match=r"dynamics.onnx state has shape \[3, 'B', 6\], the manifest's dims give "
                                          r"\[3, 'B', 7\]"):
        verify_bundle(Bundle(manifest, bundle.files))


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_graph_with_fixed_batch_is_refused(export_tiny_bundle, tiny_modules):
    import torch

    bundle = read_bundle(export_tiny_bundle())
    _, actor, _ = tiny_modules(6, 2, 3)
    buffer = io.BytesIO()
    torch.onnx.export(actor, (torch.zeros(4, 6), torch.zeros(4, 2)), buffer, input_names=["state", "noise"],
                      output_names=["action"], dynamo=False)  # no dynamic_axes: B is baked in as 4
    with pytest.raises(BundleError, match=r"actor.onnx state has shape \[4, 6\], the manifest's dims give \['B', 6\]"):
        verify_bundle(with_file(bundle, "actor.onnx", buffer.getvalue(), fix_hash=True))


def test_dims_other_than_expected_are_refused(export_tiny_bundle):
    bundle = read_bundle(export_tiny_bundle(obs_dim=5))
    with pytest.raises(BundleError, match="bundle obs_dim is 5, expected 6"):
        verify_bundle(bundle, {"task": "rc_car", "obs_dim": 6, "act_dim": 2})
    with pytest.raises(BundleError, match="bundle task is 'rc_car', expected 'point_mass'"):
        verify_bundle(bundle, {"task": "point_mass"})


def test_nan_weights_fail_the_probe(export_tiny_bundle, tiny_modules):
    import torch

    dynamics, actor, critic = tiny_modules(6, 2, 3)
    with torch.no_grad():
        dynamics.weights[-1][0, 0, 0] = float("nan")  # member 0, first mean output
    bundle = read_bundle(export_tiny_bundle(modules=(dynamics, actor, critic)))
    with pytest.raises(BundleError, match=r"dynamics.onnx output next_state is not finite on the probe batch "
                                          r"\(8 of 144 values\)"):
        verify_bundle(bundle)


def test_actor_outside_action_bounds_fails_the_probe(export_tiny_bundle, tiny_modules):
    import torch

    class DoubledActor(torch.nn.Module):
        def __init__(self, actor):
            super().__init__()
            self.actor = actor

        def forward(self, state, noise):
            return 2.0 * self.actor(state, noise)

    dynamics, actor, critic = tiny_modules(6, 2, 3)
    bundle = read_bundle(export_tiny_bundle(modules=(dynamics, DoubledActor(actor), critic)))
    with pytest.raises(BundleError, match="actor.onnx actions leave the bounds"):
        verify_bundle(bundle)


@pytest.mark.parametrize("name, reason", [
    ("../x", "only flat file names"),
    ("sub/dynamics.onnx", "only flat file names"),
    ("notes.txt", r"expected only \['manifest.json'"),
])
def test_tar_members_other_than_bundle_files_are_refused(name, reason):
    with pytest.raises(BundleError, match=f"refused tar member '{name}': {reason}"):
        bundle_from_bytes(tar_of([(name, b"x")]))


def test_tar_symlink_and_duplicates_are_refused():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("manifest.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(BundleError, match="'manifest.json': not a regular file"):
        bundle_from_bytes(buffer.getvalue())
    with pytest.raises(BundleError, match="'actor.onnx': duplicate"):
        bundle_from_bytes(tar_of([("actor.onnx", b"x"), ("actor.onnx", b"y")]))


def test_oversized_member_and_non_tar_are_refused(monkeypatch):
    monkeypatch.setattr(bundle_mod, "MAX_FILE_BYTES", 4)
    with pytest.raises(BundleError, match="'actor.onnx': 5 bytes exceeds 4"):
        bundle_from_bytes(tar_of([("actor.onnx", b"12345")]))
    with pytest.raises(BundleError, match="not a readable uncompressed tar"):
        bundle_from_bytes(b"\x1f\x8b gzip, not tar" * 40)


def test_manifest_must_be_a_bundle_manifest(export_tiny_bundle):
    bundle = read_bundle(export_tiny_bundle())
    files = dict(bundle.files)
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        bundle_from_bytes(tar_of({**files, "manifest.json": b"{oops"}.items()))
    manifest = {**bundle.manifest, "obs_dim": "6"}
    with pytest.raises(BundleError, match="field 'obs_dim' is missing or not of type int"):
        bundle_from_bytes(tar_of({**files, "manifest.json": json.dumps(manifest).encode()}.items()))
    manifest = {**bundle.manifest, "action_low": [-1.0]}
    with pytest.raises(BundleError, match=r"action_low must be 2 numbers \(act_dim\), got \[-1.0\]"):
        bundle_from_bytes(tar_of({**files, "manifest.json": json.dumps(manifest).encode()}.items()))


# ---------------------------------------------------------------- durable writes


def consistent(directory) -> int:
    """The version of the bundle in ``directory`` after checking every graph against the manifest."""
    bundle = read_bundle(directory)
    for name in ("dynamics.onnx", "actor.onnx", "critic.onnx"):
        assert hashlib.sha256(bundle.files[name]).hexdigest() == bundle.manifest["sha256"][name], name
    return bundle.version


def test_a_write_cut_off_at_any_step_leaves_the_old_bundle_or_the_new_one_whole(tmp_path, export_tiny_bundle,
                                                                                monkeypatch):
    """The writer dies (an exception stands in for the kill) before each of its syncs and renames:
    the directory then holds version 1 or version 2 with matching graphs; only between the two
    renames is it absent, and then the old bundle is whole in its ``.old`` sibling."""
    import os
    from pathlib import Path

    old, new = read_bundle(export_tiny_bundle(version=1, name="v1")), read_bundle(export_tiny_bundle(version=2, name="v2"))
    target = tmp_path / "bundle"
    rename, fsync = Path.rename, os.fsync
    outcomes = set()
    for step in range(20):
        write_bundle(old, target)
        calls = []

        def die_at_step(original):
            def call(*args):
                calls.append(original)
                if len(calls) > step:
                    raise KeyboardInterrupt("killed")
                return original(*args)
            return call

        monkeypatch.setattr(Path, "rename", die_at_step(rename))
        monkeypatch.setattr(os, "fsync", die_at_step(fsync))
        try:
            write_bundle(new, target)
            finished = True
        except KeyboardInterrupt:
            finished = False
        monkeypatch.undo()
        if target.exists():
            outcomes.add(consistent(target))
        else:
            [aside] = tmp_path.glob(".bundle.old-*")
            assert consistent(aside) == 1
            outcomes.add("absent")
        if finished:
            break
    assert outcomes == {1, "absent", 2} and consistent(target) == 2
    assert not list(tmp_path.glob(".bundle.*"))  # the leftovers of the killed writers are gone
    write_bundle(old, target)
    assert consistent(target) == 1 and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_directory_with_other_files_is_not_replaced(tmp_path, export_tiny_bundle):
    bundle = read_bundle(export_tiny_bundle())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a bundle file")
    with pytest.raises(BundleError, match=r"not replacing .*mine: it holds \['notes.txt'\]"):
        write_bundle(bundle, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").is_file()


def test_a_bundle_with_more_members_than_the_work_ceiling_allows_is_refused(tmp_path, export_tiny_bundle):
    import json

    from loop_ros.core.bundle import MANIFEST, BundleError, bundle_from_files, read_bundle
    from loop_ros.core.config import MAX_ENSEMBLE_SIZE

    bundle = read_bundle(export_tiny_bundle())
    manifest = {**bundle.manifest, "ensemble_size": MAX_ENSEMBLE_SIZE + 1}
    with pytest.raises(BundleError, match=f"ensemble_size {MAX_ENSEMBLE_SIZE + 1} exceeds {MAX_ENSEMBLE_SIZE}"):
        bundle_from_files({**bundle.files, MANIFEST: json.dumps(manifest).encode()})

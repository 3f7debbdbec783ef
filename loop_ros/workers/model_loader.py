"""Loads model bundles off the control path and swaps them into a ``ModelHolder``.

Loading has two halves. Reading, verifying (hashes, IO contract, finite probe outputs) and
composing the planner's fused graphs is Python work; it runs in a child process
(``BundlePreparer``), because in the planner's process it held the GIL while the planning
thread waited: measured in a 600 s online run on 2 cores, plans that overlapped a load took
up to 84 ms, 10 ms of it computing. Building the ONNX Runtime sessions from those bytes
(mostly C++ that releases the GIL) runs in this loader's thread, niced, so it yields the
cores to planning. The planner keeps planning with the old model meanwhile. The newest
request wins; a bad bundle is counted and the old model keeps running.

Trust (``core.signing``): bundle bytes (the ``model`` topic) are accepted only with a valid
Ed25519 signature from a key in ``trusted_keys`` and a version strictly newer than the active
model's; the preparer checks both before it verifies anything, so an untrusted bundle costs
a tar parse and one signature check. A bundle directory (``task.bundle``, chosen by the user)
needs no signature and may hold any version. A ``runtime.*`` edit rebuilds the sessions of
the active model, not of the directory: an online-trained model stays.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

from loop_ros.core.bundle import MANIFEST, BundleError, bundle_from_bytes, bundle_from_files, read_bundle
from loop_ros.core.bundle_verify import verify_bundle
from loop_ros.core.config import RuntimeConfig, TerminalValue
from loop_ros.core.runtime import ModelHolder, OrtPlanningModel, fused_graphs
from loop_ros.core.signing import BundleRefused, load_trusted_keys, public_key_bytes, verify_bundle_trust
from loop_ros.workers.priority import lower_thread_priority
from loop_ros.workers.thread_loop import ThreadLoop

LOADER_NICE = 10
"""Niceness of the loader thread and of the preparer process: loading is never urgent,
planning always is (plans that overlapped a load at nice 0 waited up to 189 ms for a core)."""
PREPARE_TIMEOUT_S = 60.0
"""A preparer that has not answered by then is killed and the bundle refused."""

FusedKey = tuple[int, TerminalValue]  # (horizon, terminal kind) of the planner's fused graphs
Trust = tuple[dict, "int | None"]  # (trusted key id -> raw public key, the active model's version)
INVALID, REBUILD_FAILED = "invalid", "rebuild_failed"
"""Reasons counted besides ``core.signing.REFUSALS``: a bundle that fails verification (or whose
sessions cannot be built), and a failed rebuild of the active model for a runtime edit."""


def trusted_public_keys(paths: Iterable[str]) -> dict[str, bytes]:
    """Key id -> raw public key of the PEMs of ``security.trusted_keys`` (``SigningError``, a
    ``ConfigError``, on a bad file)."""
    return {kid: public_key_bytes(key) for kid, key in load_trusted_keys(paths).items()}


def prepare_bundle(kind: str, source, expected: dict, fused: FusedKey | None,
                   trust: Trust | None = None) -> tuple[dict, tuple[bytes, bytes] | None]:
    """Read, check and compose: (the bundle's files, the fused rollout and actor-prior graphs
    for ``fused`` or None). Raises ``BundleError`` (``BundleRefused`` for trust).

    ``kind``: 'directory' (a path: read and verified), 'bytes' (from the topic: the signature
    and version are checked against ``trust`` first, then verified; required) or 'rebuild'
    (the files of the active model, verified when it was loaded: only composed).
    """
    if kind == "rebuild":
        bundle = bundle_from_files(dict(source))
    else:
        bundle = read_bundle(source) if kind == "directory" else bundle_from_bytes(source)
        if kind == "bytes":
            if trust is None:
                raise BundleError("bundle bytes need the trusted keys and active version to be checked against")
            verify_bundle_trust(bundle, *trust)
        verify_bundle(bundle, expected)
    try:
        graphs = None if fused is None else fused_graphs(bundle, *fused)
    except Exception as error:  # a graph that verifies but does not compose is still unusable
        raise BundleError(f"cannot compose the planning graphs: {error!r}") from error
    return bundle.files, graphs


def _serve(connection) -> None:
    """The preparer process: answers ``prepare_bundle`` requests until the pipe closes."""
    # A Ctrl-C sent to the whole process group (ros2 launch) is the planner's to handle: the child
    # ends when the planner closes the pipe, without a KeyboardInterrupt traceback. (During its
    # start-up imports, about a second after the planner's first load, SIGINT still stops it:
    # blocking SIGINT in the parent around the start did not carry over to the child, measured.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(LOADER_NICE)
    while True:
        try:
            request = connection.recv()
        except EOFError:  # the planner has gone
            return
        try:
            connection.send(("ok", prepare_bundle(*request)))
        except Exception as error:  # noqa: BLE001 - every failure is an answer, never a dead child
            connection.send(("error", (str(error) if isinstance(error, BundleError) else repr(error),
                                       getattr(error, "reason", INVALID))))


class BundlePreparer:
    """``prepare_bundle`` in a child process (started on first use, restarted if it dies)."""

    def __init__(self):
        self._context = multiprocessing.get_context("spawn")  # fork would copy the node's DDS threads' state
        self._process = None
        self._connection = None

    def prepare(self, kind: str, source, expected: dict, fused: FusedKey | None,
                trust: Trust | None = None) -> tuple[dict, tuple | None]:
        if self._process is None or not self._process.is_alive():
            self._start()
        self._connection.send((kind, str(source) if kind == "directory" else source, expected, fused, trust))
        if not self._connection.poll(PREPARE_TIMEOUT_S):
            self.close()
            raise BundleError(f"the bundle preparer did not answer within {PREPARE_TIMEOUT_S:.0f} s")
        try:
            status, payload = self._connection.recv()
        except (EOFError, OSError) as error:
            self.close()
            raise BundleError("the bundle preparer died while preparing") from error
        if status != "ok":
            message, reason = payload
            raise BundleError(message) if reason == INVALID else BundleRefused(reason, message)
        return payload

    def _start(self) -> None:
        self.close()
        self._connection, child = self._context.Pipe()
        self._process = self._context.Process(target=_serve, args=(child,), name="bundle-preparer", daemon=True)
        self._process.start()
        child.close()

    def close(self) -> None:
        """Stop the child (closing the pipe ends it; killed if it does not go)."""
        if self._connection is not None:
            self._connection.close()
        if self._process is not None:
            self._process.join(2.0)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._process = self._connection = None


class ModelLoader(ThreadLoop):
    """Background loading of bundle directories or bundle bytes into ``holder``.

    ``expected`` are the manifest fields a bundle must have (task, obs_dim, act_dim).
    ``fused_key()`` gives the (horizon, terminal kind) the planner will plan with, or None,
    so its fused graphs are composed before the swap (in the plan worker they took 80-120 ms
    and cost 4-6 deadline misses per swap); ``on_swapped()`` runs after each swap;
    ``log(level, text)`` reports what happened. ``status`` describes the model in use for
    the diagnostics; ``errors`` counts bad bundles, ``rejections`` them by reason
    (``core.signing.REFUSALS``, ``INVALID``, ``REBUILD_FAILED``). ``trusted_keys`` (key id ->
    raw public key, ``trusted_public_keys``) is set by the planner at start; empty, every
    bundle from the topic is refused.
    """

    def __init__(self, holder: ModelHolder, expected: dict, on_swapped: Callable[[], None],
                 log: Callable[[str, str], None], fused_key: Callable[[], FusedKey | None] = lambda: None):
        super().__init__("model-loader")
        self.holder, self.expected = holder, expected
        self._on_swapped, self._log, self._fused_key = on_swapped, log, fused_key
        self._preparer = BundlePreparer()
        self._request: tuple[str, object, RuntimeConfig] | None = None  # the newest model to load
        self._rebuild: RuntimeConfig | None = None  # the runtime the active model is to be rebuilt with
        self.trusted_keys: dict[str, bytes] = {}
        self._active: tuple[str, RuntimeConfig] | None = None  # (origin, runtime) of the model swapped in last
        self.status = "no model"
        self.errors = 0
        self.rejections: Counter[str] = Counter()
        self.last_error: str | None = None  # why the newest bundle was rejected; None after a swap
        self.busy = False  # a bundle is being loaded now
        self.start()

    @property
    def pending(self) -> bool:
        """A bundle is waiting or being loaded."""
        with self._cond:
            return self.busy or self._request is not None or self._rebuild is not None

    def load_directory(self, directory: Path, runtime: RuntimeConfig) -> None:
        self._submit(("directory", directory, runtime))

    def load_bytes(self, data: bytes, runtime: RuntimeConfig) -> None:
        self._submit(("bytes", data, runtime))

    def rebuild(self, runtime: RuntimeConfig) -> None:
        """Rebuild the active model's sessions with ``runtime`` (a ``runtime.*`` edit), same
        version, no trust checks (it is the active model). It never displaces a model waiting to
        be loaded: that one takes ``runtime`` instead, and the rebuild runs after it (skipped when
        the model then active was built with ``runtime``)."""
        with self._cond:
            self._rebuild = runtime
            if self._request is not None:
                self._request = (*self._request[:2], runtime)
            self._cond.notify()

    def stop(self, timeout_s: float = 2.0) -> bool:
        stopped = super().stop(timeout_s)
        self._preparer.close()
        return stopped

    def _submit(self, request) -> None:
        with self._cond:
            self._request = request
            self._cond.notify()

    def _on_start(self) -> None:
        lower_thread_priority(LOADER_NICE)

    def _has_work(self) -> bool:
        return self._request is not None or self._rebuild is not None

    def _take(self):
        if self._request is not None:
            request, self._request = self._request, None
        else:
            request, self._rebuild = ("rebuild", None, self._rebuild), None
        self.busy = True  # under the lock, so ``pending`` never reads a gap
        return request

    def _work(self, request) -> None:
        self._load(*request)

    def _failed(self, error: Exception) -> None:
        """E.g. an unreadable bundle path: counted and logged, the active model stays."""
        self.errors += 1
        self.rejections[INVALID] += 1
        self.last_error = f"loading failed: {error!r}"
        self._log("error", self.last_error)

    def _turn_done(self) -> None:
        self.busy = False

    def _load(self, kind: str, source, runtime: RuntimeConfig) -> None:
        if kind == "directory" and not (Path(source) / MANIFEST).is_file():
            if self.holder.current is None:
                self.status = f"no model: no bundle at {source}"
            self._log("warn", f"no model bundle at {source}; publishing the safe action until one arrives")
            return
        active = self.holder.current
        if kind == "rebuild":
            if active is None or self._active is None or self._active[1] == runtime:
                return  # nothing to rebuild, or the active model already runs with ``runtime``
            source = active.bundle.files
        origin = {"directory": str(source), "bytes": "the model topic"}.get(kind) or self._active[0]
        fused = self._fused_key()
        trust = (dict(self.trusted_keys), self.holder.version) if kind == "bytes" else None
        try:
            files, graphs = self._preparer.prepare(kind, source, self.expected, fused, trust)
            model = OrtPlanningModel(bundle_from_files(files), runtime)
            if graphs is not None:
                model.load_fused(*fused, *graphs)
        except Exception as error:  # noqa: BLE001 - whatever a bad bundle raises, the node keeps running
            self._refused(kind, origin, error)
            return
        self.holder.swap(model)
        self._active = (origin, runtime)
        self.last_error = None
        rebuilt = f" (sessions rebuilt for runtime {runtime.device}, {runtime.intra_op_threads} threads)"
        self.status = (f"model version {model.version} from {origin} on {model.providers[0]}"
                       + (rebuilt if kind == "rebuild" else ""))
        self._log("info", self.status)
        self._on_swapped()

    def _refused(self, kind: str, origin: str, error: Exception) -> None:
        """Count and report a load that failed; the active model (if any) stays."""
        self.errors += 1
        reason = REBUILD_FAILED if kind == "rebuild" else getattr(error, "reason", INVALID)
        self.rejections[reason] += 1
        if kind == "rebuild":
            self.last_error = f"rebuilding the model from {origin} for the runtime edit failed: {error}"
        elif isinstance(error, BundleRefused):
            self.last_error = f"bundle from {origin} refused: {error}"
        else:
            self.last_error = f"bad bundle from {origin} rejected: {error}"
        if self.holder.current is None:
            self.status = "no model: " + self.last_error
        self._log("error", self.last_error + (" (keeping the old model)" if self.holder.current else ""))

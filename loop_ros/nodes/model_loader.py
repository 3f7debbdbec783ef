"""Loads model bundles off the control path and swaps them into a ``ModelHolder``.

Loading has two halves. Reading, verifying (hashes, IO contract, finite probe outputs) and
composing the planner's fused graphs is Python work; it runs in a child process
(``BundlePreparer``), because in the planner's process it held the GIL while the planning
thread waited: measured in a 600 s online run on 2 cores, plans that overlapped a load took
up to 84 ms, 10 ms of it computing. Building the ONNX Runtime sessions from those bytes
(mostly C++ that releases the GIL) runs in this loader's thread, niced, so it yields the
cores to planning. The planner keeps planning with the old model meanwhile. The newest
request wins; a bad bundle is counted and the old model keeps running.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import Callable

from loop_ros.core.bundle import MANIFEST, BundleError, bundle_from_bytes, bundle_from_files, read_bundle, verify_bundle
from loop_ros.core.config import RuntimeConfig
from loop_ros.core.runtime import ModelHolder, OrtPlanningModel, fused_graphs
from loop_ros.nodes import lower_thread_priority

LOADER_NICE = 10
"""Niceness of the loader thread and of the preparer process: loading is never urgent,
planning always is (plans that overlapped a load at nice 0 waited up to 189 ms for a core)."""
PREPARE_TIMEOUT_S = 60.0
"""A preparer that has not answered by then is killed and the bundle refused."""

FusedKey = tuple[int, "str | None"]  # (horizon, terminal kind) of the planner's fused graphs


def prepare_bundle(kind: str, source, expected: dict, fused: FusedKey | None) -> tuple[dict, tuple[bytes, bytes] | None]:
    """Read (``kind`` 'directory' or 'bytes'), verify and compose: (the bundle's files, the
    fused rollout and actor-prior graphs for ``fused`` or None). Raises ``BundleError``."""
    bundle = read_bundle(source) if kind == "directory" else bundle_from_bytes(source)
    verify_bundle(bundle, expected)
    try:
        graphs = None if fused is None else fused_graphs(bundle, *fused)
    except Exception as error:  # a graph that verifies but does not compose is still unusable
        raise BundleError(f"cannot compose the planning graphs: {error!r}") from error
    return bundle.files, graphs


def _serve(connection) -> None:
    """The preparer process: answers ``prepare_bundle`` requests until the pipe closes."""
    os.nice(LOADER_NICE)
    while True:
        try:
            request = connection.recv()
        except EOFError:  # the planner has gone
            return
        try:
            connection.send(("ok", prepare_bundle(*request)))
        except Exception as error:  # noqa: BLE001 - every failure is an answer, never a dead child
            connection.send(("error", str(error) if isinstance(error, BundleError) else repr(error)))


class BundlePreparer:
    """``prepare_bundle`` in a child process (started on first use, restarted if it dies)."""

    def __init__(self):
        self._context = multiprocessing.get_context("spawn")  # fork would copy the node's DDS threads' state
        self._process = None
        self._connection = None

    def prepare(self, kind: str, source, expected: dict, fused: FusedKey | None) -> tuple[dict, tuple | None]:
        if self._process is None or not self._process.is_alive():
            self._start()
        self._connection.send((kind, str(source) if kind == "directory" else source, expected, fused))
        if not self._connection.poll(PREPARE_TIMEOUT_S):
            self.close()
            raise BundleError(f"the bundle preparer did not answer within {PREPARE_TIMEOUT_S:.0f} s")
        try:
            status, payload = self._connection.recv()
        except (EOFError, OSError) as error:
            self.close()
            raise BundleError("the bundle preparer died while preparing") from error
        if status != "ok":
            raise BundleError(payload)
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


class ModelLoader:
    """Background loading of bundle directories or bundle bytes into ``holder``.

    ``expected`` are the manifest fields a bundle must have (task, obs_dim, act_dim).
    ``fused_key()`` gives the (horizon, terminal kind) the planner will plan with, or None,
    so its fused graphs are composed before the swap (in the plan worker they took 80-120 ms
    and cost 4-6 deadline misses per swap); ``on_swapped()`` runs after each swap;
    ``log(level, text)`` reports what happened. ``status`` describes the model in use for
    the diagnostics; ``errors`` counts bad bundles.
    """

    def __init__(self, holder: ModelHolder, expected: dict, on_swapped: Callable[[], None],
                 log: Callable[[str, str], None], fused_key: Callable[[], FusedKey | None] = lambda: None):
        self.holder, self.expected = holder, expected
        self._on_swapped, self._log, self._fused_key = on_swapped, log, fused_key
        self._preparer = BundlePreparer()
        self._cond = threading.Condition()
        self._request: tuple[str, object, RuntimeConfig] | None = None
        self._stopping = False
        self.status = "no model"
        self.errors = 0
        self.last_error: str | None = None  # why the newest bundle was rejected; None after a swap
        self.busy = False  # a bundle is being loaded now
        self._thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> bool:
        """A bundle is waiting or being loaded."""
        with self._cond:
            return self.busy or self._request is not None

    def load_directory(self, directory: Path, runtime: RuntimeConfig) -> None:
        self._submit(("directory", directory, runtime))

    def load_bytes(self, data: bytes, runtime: RuntimeConfig) -> None:
        self._submit(("bytes", data, runtime))

    def stop(self, timeout_s: float = 2.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout_s)
        self._preparer.close()

    def _submit(self, request) -> None:
        with self._cond:
            self._request = request
            self._cond.notify()

    def _run(self) -> None:
        lower_thread_priority(LOADER_NICE)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._request is not None)
                if self._stopping:
                    return
                request, self._request = self._request, None
                self.busy = True  # under the lock, so ``pending`` never reads a gap
            try:
                self._load(*request)
            finally:
                self.busy = False

    def _load(self, kind: str, source, runtime: RuntimeConfig) -> None:
        if kind == "directory" and not (Path(source) / MANIFEST).is_file():
            if self.holder.current is None:
                self.status = f"no model: no bundle at {source}"
            self._log("warn", f"no model bundle at {source}; publishing the safe action until one arrives")
            return
        origin = str(source) if kind == "directory" else "the model topic"
        fused = self._fused_key()
        try:
            files, graphs = self._preparer.prepare(kind, source, self.expected, fused)
            model = OrtPlanningModel(bundle_from_files(files), runtime)
            if graphs is not None:
                model.load_fused(*fused, *graphs)
        except Exception as error:  # noqa: BLE001 - whatever a bad bundle raises, the node keeps running
            self.errors += 1
            self.last_error = f"bad bundle from {origin} rejected: {error}"
            if self.holder.current is None:
                self.status = "no model: " + self.last_error
            self._log("error", self.last_error + (" (keeping the old model)" if self.holder.current else ""))
            return
        self.holder.swap(model)
        self.last_error = None
        self.status = f"model version {model.version} from {origin} on {model.providers[0]}"
        self._log("info", self.status)
        self._on_swapped()

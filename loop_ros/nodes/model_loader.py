"""Loads model bundles off the control path and swaps them into a ``ModelHolder``.

Reading, verifying (hashes, IO contract, finite probe outputs) and building ONNX Runtime
sessions take a second or more, so they run in this loader's thread; the planner keeps
planning with the old model meanwhile. The newest request wins; a bad bundle is counted
and the old model keeps running.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from loop_ros.core.bundle import MANIFEST, read_bundle, verify_bundle
from loop_ros.core.config import RuntimeConfig
from loop_ros.core.runtime import ModelHolder, OrtPlanningModel


class ModelLoader:
    """Background loading of bundle directories or bundle bytes into ``holder``.

    ``expected`` are the manifest fields a bundle must have (task, obs_dim, act_dim).
    ``prepare(model)`` runs in this thread before a swap (the planner composes its fused
    graphs there, which took 80-120 ms in the plan worker and cost 4-6 deadline misses per
    swap); ``on_swapped()`` runs after each swap; ``log(level, text)`` reports what happened.
    ``status`` describes the model in use for the diagnostics; ``errors`` counts bad bundles.
    """

    def __init__(self, holder: ModelHolder, expected: dict, on_swapped: Callable[[], None],
                 log: Callable[[str, str], None], prepare: Callable[[OrtPlanningModel], None] = lambda model: None):
        self.holder, self.expected = holder, expected
        self._on_swapped, self._log, self._prepare = on_swapped, log, prepare
        self._cond = threading.Condition()
        self._request: tuple[str, object, RuntimeConfig] | None = None
        self._stopping = False
        self.status = "no model"
        self.errors = 0
        self.last_error: str | None = None  # why the newest bundle was rejected; None after a swap
        self._thread = threading.Thread(target=self._run, name="model-loader", daemon=True)
        self._thread.start()

    def load_directory(self, directory: Path, runtime: RuntimeConfig) -> None:
        self._submit(("directory", directory, runtime))

    def load_bytes(self, data: bytes, runtime: RuntimeConfig) -> None:
        self._submit(("bytes", data, runtime))

    def stop(self, timeout_s: float = 2.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout_s)

    def _submit(self, request) -> None:
        with self._cond:
            self._request = request
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._request is not None)
                if self._stopping:
                    return
                request, self._request = self._request, None
            self._load(*request)

    def _load(self, kind: str, source, runtime: RuntimeConfig) -> None:
        if kind == "directory" and not (Path(source) / MANIFEST).is_file():
            if self.holder.current is None:
                self.status = f"no model: no bundle at {source}"
            self._log("warn", f"no model bundle at {source}; publishing the safe action until one arrives")
            return
        origin = str(source) if kind == "directory" else "the model topic"
        try:
            if kind == "directory":
                bundle = read_bundle(source)
                verify_bundle(bundle, self.expected)
                model = OrtPlanningModel(bundle, runtime)
            else:
                model = self.holder.load_from_bytes(source, self.expected, runtime)
            self._prepare(model)
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

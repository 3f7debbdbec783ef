"""ONNX Runtime execution of a bundle, behind a holder the planner swaps between ticks.

``OrtPlanningModel`` implements the planner's ``PlanningModel`` protocol (numpy float32
in and out) with one session per graph. ``ModelHolder`` builds and verifies new models
off the control path; the control path only reads ``holder.current`` once per tick.
"""
from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort

from loop_ros.core.bundle import Bundle, BundleError, bundle_from_bytes, verify_bundle
from loop_ros.core.config import RuntimeConfig

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
MAX_SMALL_GRAPH_THREADS = 2
"""Threads of the actor and critic sessions (at most the rollout's), never spinning.

Measured on the 2-core dev VM, paper-halfcheetah shapes (2x256 MLPs on K*N*P = 2000 rows,
calls interleaved with the spinning 2-thread dynamics session as in a plan, medians of 80
plans, three runs): 2 threads made a plan 6-13 % faster than 1 thread (actor call alone
1.4-1.85 vs 1.86-2.24 ms); on 200 rows they tie. Spinning on these sessions doubled the
plan time (STACK_NOTES)."""


def make_session(onnx_bytes: bytes, device: str, intra_op_threads: int, spinning: bool):
    """An ``onnxruntime.InferenceSession`` for one graph.

    Spinning threads busy-wait after a run for the next one: worth it for the rollout
    graph called back to back (off costs 15-20 %), harmful for a second session whose
    spinning threads steal the cores of the next run (~+30 %), see STACK_NOTES.
    ``device == "cuda"`` asks for CUDA first; ``session.get_providers()`` tells what runs.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(onnx_bytes, options, providers=requested_providers(device))


def requested_providers(device: str) -> list[str]:
    """CUDA then CPU when CUDA is asked for and this onnxruntime build has it; else CPU."""
    if device == "cuda" and CUDA in ort.get_available_providers():
        return [CUDA, CPU]
    return [CPU]


class OrtPlanningModel:
    """The ``PlanningModel`` of the planner, run by ONNX Runtime from a verified bundle.

    ``dynamics``: state (K,B,S), action (K,B,A), noise (K,B,S) -> next_state (K,B,S), reward (K,B)
    ``actor``:    state (B,S), noise (B,A) -> action (B,A)
    ``critic``:   state (B,S), action (B,A) -> q (B,)
    All arrays float32. ``providers`` lists what the dynamics session actually runs on.
    """

    def __init__(self, bundle: Bundle, runtime_cfg: RuntimeConfig):
        self.bundle = bundle
        self.ensemble_size = bundle.ensemble_size
        self.obs_dim = bundle.obs_dim
        self.act_dim = bundle.act_dim
        self.version = bundle.version
        device, threads = runtime_cfg.device, runtime_cfg.intra_op_threads
        small_threads = min(threads, MAX_SMALL_GRAPH_THREADS)
        self._dynamics = _build(bundle, "dynamics.onnx", device, threads, spinning=True)
        self._actor = _build(bundle, "actor.onnx", device, small_threads, spinning=False)
        self._critic = _build(bundle, "critic.onnx", device, small_threads, spinning=False)
        self.providers = self._dynamics.get_providers()
        if device == "cuda" and CUDA not in self.providers:
            log.warning(
                "runtime.device is 'cuda' but ONNX Runtime runs on %s (available providers: %s); "
                "install onnxruntime-gpu with CUDA 13 + cuDNN 9 for the GPU",
                self.providers, ort.get_available_providers(),
            )

    # Plain run(None, feeds): IO binding with preallocated outputs measured no faster on
    # (5, 400, 17) rollouts (2.62 vs 2.56 ms) and slower on tiny batches (124 vs 118 us).
    def dynamics(self, state: np.ndarray, action: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        next_state, reward = self._dynamics.run(None, {"state": state, "action": action, "noise": noise})
        return next_state, reward

    def actor(self, state: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self._actor.run(None, {"state": state, "noise": noise})[0]

    def critic(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        return self._critic.run(None, {"state": state, "action": action})[0]


def _build(bundle: Bundle, name: str, device: str, threads: int, spinning: bool):
    try:
        return make_session(bundle.files[name], device, threads, spinning)
    except Exception as error:  # ORT raises its own Exception subclasses
        raise BundleError(f"cannot build an ONNX Runtime session for {name}: {error}") from error


class ModelHolder:
    """The active ``OrtPlanningModel``, replaced by one reference assignment.

    Readers take ``model = holder.current`` once per tick and use that model for the
    whole tick, so a swap from another thread lands between ticks without a lock.
    """

    def __init__(self, model: OrtPlanningModel | None = None):
        self._model = model
        self.swaps = 0
        self.rejected = 0

    @property
    def current(self) -> OrtPlanningModel | None:
        return self._model

    @property
    def version(self) -> int | None:
        model = self._model
        return None if model is None else model.version

    def swap(self, new_model: OrtPlanningModel) -> None:
        self._model = new_model
        self.swaps += 1

    def load_from_bytes(self, data: bytes, expected: dict | None, runtime_cfg: RuntimeConfig) -> OrtPlanningModel:
        """Read, verify and build a model from bundle bytes (~20-50 ms: call it off the control
        path). Does not swap it in. A bad bundle raises ``BundleError``, counts in
        ``rejected`` and leaves ``current`` untouched."""
        try:
            bundle = bundle_from_bytes(data)
            verify_bundle(bundle, expected)
            return OrtPlanningModel(bundle, runtime_cfg)
        except BundleError:
            self.rejected += 1
            raise

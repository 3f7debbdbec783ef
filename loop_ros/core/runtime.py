"""ONNX Runtime execution of a bundle, behind a holder the planner swaps between ticks.

``OrtPlanningModel`` implements the planner's ``FusedRolloutModel`` protocol
(``planning_model.py``, numpy float32 in and out) with one session per graph. ``ModelHolder``
holds the model in use; new ones are verified and built off the control path
(``workers.model_loader``), and the control path only reads ``holder.current`` once per tick.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort

from loop_ros.core.bundle import Bundle, BundleError
from loop_ros.core.config import RuntimeConfig, TerminalValue

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
    """The planner's ``FusedRolloutModel`` (planning_model.py), run by ONNX Runtime from a verified bundle.

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
        self._runtime_cfg = runtime_cfg
        self._rollouts: dict = {}
        self._priors: dict = {}
        self._zero_cache: dict = {}
        self._pool: ThreadPoolExecutor | None = None  # runs the rollout's other slices (threads > 1)
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

    # ---- fused graphs (rollout_graph.py): one session run per ARC iteration
    def prepare(self, horizon: int, terminal: TerminalValue) -> None:
        """Compose and load the fused graphs for this horizon (slow: off the control path)."""
        terminal = TerminalValue(terminal)
        if (horizon, terminal) not in self._rollouts or horizon not in self._priors:
            self.load_fused(horizon, terminal, *fused_graphs(self.bundle, horizon, terminal))

    def load_fused(self, horizon: int, terminal: TerminalValue, rollout: bytes, prior: bytes) -> None:
        """Sessions of fused graphs composed elsewhere (``fused_graphs`` of this bundle). On the
        CPU with n > 1 threads the rollout gets n one-thread sessions, one per slice of the
        batch (``rollout``)."""
        cfg = self._runtime_cfg
        parts = cfg.intra_op_threads if self.providers[0] == CPU else 1
        threads = 1 if parts > 1 else cfg.intra_op_threads
        self._rollouts[(horizon, TerminalValue(terminal))] = [make_session(rollout, cfg.device, threads, spinning=True)
                                               for _ in range(parts)]
        # the prior runs 5-row batches: 0.48 ms per run on one thread, 0.60 on two (paper-halfcheetah)
        self._priors[horizon] = make_session(prior, cfg.device, 1, spinning=False)

    def rollout(self, state, actions, noise, terminal: TerminalValue):
        """state (K,B,S), actions (H,K,B,A), noise (H,K,B,S) -> states (H,K,B,S), rewards (H,K,B), q (K,B) | None
        (None for NONE).

        With several sessions, each runs one slice of the B rollouts in its own thread (ONNX
        Runtime releases the GIL; no op mixes rollouts, so the result is the same). Measured on
        2 cores, paper-halfcheetah shapes: one dynamics step took 2.14 ms as two one-thread
        sessions on halves against 2.35 ms as one two-thread session (a 2000x256x256 GEMM: 1.44 ms).
        """
        self.prepare(len(actions), terminal)
        sessions = self._rollouts[(len(actions), terminal)]
        if len(sessions) == 1:
            out = sessions[0].run(None, self._rollout_feeds(state, actions, noise, terminal))
        else:
            bounds = np.linspace(0, state.shape[1], len(sessions) + 1).astype(int)
            # every slice's feeds first, so the other threads start as soon as they are submitted
            feeds = [self._rollout_feeds(state[:, lo:hi], actions[:, :, lo:hi], noise[:, :, lo:hi], terminal)
                     for lo, hi in zip(bounds[:-1], bounds[1:])]
            pool = self._pool or self._start_pool(len(sessions) - 1)
            others = [pool.submit(session.run, None, part) for session, part in zip(sessions[1:], feeds[1:])]
            results = [sessions[0].run(None, feeds[0])] + [future.result() for future in others]
            axes = (2, 2, 1)[:len(results[0])]  # states, rewards, q
            out = [np.concatenate([r[i] for r in results], axis=axis) for i, axis in enumerate(axes)]
        return out[0], out[1], (out[2] if terminal != TerminalValue.NONE else None)

    def _rollout_feeds(self, state, actions, noise, terminal: TerminalValue) -> dict[str, np.ndarray]:
        feeds = {"state": np.ascontiguousarray(state), "actions": np.ascontiguousarray(actions),
                 "noise": np.ascontiguousarray(noise)}
        if terminal == TerminalValue.DISCOUNTED:
            feeds["actor_noise"] = self._zeros((*state.shape[:2], self.act_dim))
        return feeds

    def _start_pool(self, workers: int) -> ThreadPoolExecutor:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="rollout")
        return self._pool

    def actor_rollout(self, state: np.ndarray, actor_noise: np.ndarray) -> np.ndarray:
        """state (n,S), actor_noise (H,n,A) -> the actor's actions (H,n,A) through the ensemble-mean model."""
        horizon = len(actor_noise)
        if horizon not in self._priors:
            self.prepare(horizon, TerminalValue.NONE)
        zeros = self._zeros((self.ensemble_size, state.shape[0], self.obs_dim))
        return self._priors[horizon].run(None, {"state": state, "actor_noise": actor_noise, "zeros": zeros})[0]

    def _zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        if shape not in self._zero_cache:
            self._zero_cache[shape] = np.zeros(shape, np.float32)
        return self._zero_cache[shape]

    def actor(self, state: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self._actor.run(None, {"state": state, "noise": noise})[0]

    def critic(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        return self._critic.run(None, {"state": state, "action": action})[0]


def fused_graphs(bundle: Bundle, horizon: int, terminal: TerminalValue) -> tuple[bytes, bytes]:
    """ONNX bytes of the bundle's fused rollout and actor-prior graphs (``rollout_graph``)."""
    from loop_ros.core.rollout_graph import actor_prior_graph, rollout_graph

    return (rollout_graph(bundle.files, horizon, terminal, bundle.ensemble_size, bundle.obs_dim, bundle.act_dim),
            actor_prior_graph(bundle.files, horizon, bundle.ensemble_size, bundle.obs_dim, bundle.act_dim))


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

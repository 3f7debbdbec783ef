"""The LOOP trainer: the learning side of Alg. 1 (LOOP-SAC) of the paper.

Alg. 1 line -> call here:
    l.3  a = ARC(s, pi)             ``act(s, rng, explore=True)`` (safeARC for safe-loop)
    l.5  store (s, a, r, s')        ``add_transition(s, a, r, s2, done)``
    l.6  SAC on the replay buffer   ``update()``
    l.7  fit the model every K_m    ``refit_model_if_due()`` (plus a first fit after the seeding phase)
and ``export(dir, version, provenance)`` writes a model bundle. Acting is separate from
learning, so the one-process loop (``loop-ros train``) and the ROS trainer node (which
only receives transitions) drive the same class.

Algorithms (``ALGOS``): ``loop`` ARC (safeARC when ``safety.enabled``, as for the 'arc' controller:
``config.controller_safety``); ``safe-loop`` safeARC; ``sac`` the SAC actor alone
(sampled while exploring, its mean otherwise; no dynamics model is trained while learning);
``pets`` PETS-restricted (CEM over the model, no actor, no terminal value, no SAC).

Planning inside the training process runs on torch (``TorchPlanningModel`` over the live
actor and critic, so every SAC update is used at once), never on ONNX Runtime: torch and
ORT compute in one process slow each other down (STACK_NOTES). Launch training processes
with ``MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000`` in the
environment (glibc malloc makes eager torch 15-40 % slower otherwise, STACK_NOTES), and
limit torch's threads with ``set_torch_threads``.

Subnormal floats: weight decay drives unused ensemble weights into the subnormal range
(measured: 11k of 625k dynamics weights after 5k RC-car steps), and every multiply with
one takes a microcode assist: plans went from 52 to 300 ms in torch, and the exported
dynamics graph from 2 to 18 ms per call in ONNX Runtime. So the trainer computes with
flush-to-zero on (``torch.set_flush_denormal``, per thread, hence at each entry point) and
zeroes subnormal weights in what it exports.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from loop_ros.core.arc import ArcPlanner, PlanResult
from loop_ros.core.bundle import export_bundle
from loop_ros.core.config import (ALGOS, ArcConfig, EnsembleConfig, SacConfig, SafetyConfig, TrainerConfig,
                                  controller_safety)
from loop_ros.core.ensemble import DynamicsEnsemble
from loop_ros.core.planning_model import actor_divergence
from loop_ros.core.sac import Sac, TransitionBuffer
from loop_ros.core.tasks.base import Task
from loop_ros.core.torch_model import TorchPlanningModel

def set_torch_threads(threads: int) -> None:
    """Limit torch's intra-op threads (the machine is shared with the sim and the planner)."""
    torch.set_num_threads(int(threads))


def flush_denormals() -> None:
    """Flush-to-zero for this thread's torch CPU math (module docstring: subnormal floats)."""
    torch.set_flush_denormal(True)


@torch.no_grad()
def zero_subnormal_weights(module: torch.nn.Module) -> torch.nn.Module:
    """Set parameters and buffers below float32's smallest normal to 0, in place; returns the module."""
    tiny = torch.finfo(torch.float32).tiny
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            tensor[tensor.abs() < tiny] = 0.0
    return module


def export_networks(out_dir: str | Path, task: Task, ensemble: DynamicsEnsemble, learner, version: int,
                    provenance: Mapping[str, Any], extra: Mapping[str, Any]) -> Path:
    """A bundle of ``ensemble``'s elites and ``learner``'s actor and critic (SAC's, or an offline
    value learner's) for ``task``, subnormal weights zeroed (module docstring)."""
    modules = (ensemble.planning_module(), learner.actor_module(), learner.critic_module())
    return export_bundle(out_dir, *map(zero_subnormal_weights, modules), task=task.name, obs_dim=task.obs_dim,
                         act_dim=task.act_dim, ensemble_size=ensemble.cfg.num_elites, action_low=task.action_low,
                         action_high=task.action_high, provenance=provenance, version=version, extra=extra)


class UniformRandomPolicy:
    """What the agent does before it has a model: uniform random actions (a planner's API)."""

    def __init__(self, task: Task):
        self.low = np.asarray(task.action_low, dtype=np.float32)
        self.high = np.asarray(task.action_high, dtype=np.float32)

    def plan(self, state: np.ndarray, rng: np.random.Generator, explore: bool = False) -> PlanResult:
        action = rng.uniform(self.low, self.high).astype(np.float32)
        return PlanResult(action, action[None].copy(), {})

    def reset(self) -> None:
        """Nothing to forget between episodes."""


class ActorOnlyModel(TorchPlanningModel):
    """``TorchPlanningModel`` of an actor and a critic without dynamics (algo ``sac``: the
    'actor' controller never rolls a model, and there is none to pass)."""

    def __init__(self, actor_module: torch.nn.Module, critic_module: torch.nn.Module):
        self.actor_module, self.critic_module = actor_module, critic_module
        self.ensemble_size, self.obs_dim, self.act_dim = 0, actor_module.obs_dim, actor_module.act_dim
        self.device = next(actor_module.parameters()).device

    def dynamics(self, state, action, noise):
        raise RuntimeError("algo 'sac' trains no dynamics model to plan with")


class LoopTrainer:
    """Replay buffer, SAC and dynamics ensemble of one LOOP agent, and its behaviour planner.

    All randomness comes from ``seed``: network initialisation, minibatches and fits use
    generators derived from it; ``act`` draws from the generator the caller passes.
    """

    def __init__(self, task: Task, arc: ArcConfig, safety: SafetyConfig, ensemble: EnsembleConfig,
                 sac: SacConfig, algo: str = "loop", seed: int = 0, schedule: TrainerConfig = TrainerConfig(),
                 device: str = "cpu"):
        if algo not in ALGOS:
            raise ValueError(f"unknown algo '{algo}', known: {sorted(ALGOS)}")
        self.task, self.algo, self.controller, self.schedule = task, algo, ALGOS[algo], schedule
        self.arc = arc
        self.safety = controller_safety(self.controller, safety)
        self.learns_model = algo != "sac"
        self.learns_values = algo != "pets"
        S, A = task.obs_dim, task.act_dim
        self.buffer = TransitionBuffer(S, A, sac.buffer_size)
        self.sac = Sac(S, A, task.action_low, task.action_high, sac, seed=seed, device=device)
        self.ensemble = DynamicsEnsemble(S, A, ensemble, seed=seed, device=device)
        self.rng = np.random.default_rng(seed)  # minibatches, holdout splits, bootstraps
        self.dynamics_module = None  # the elites' planning graph of the latest fit
        self.steps = 0  # transitions received
        self.fits, self.fitted_at, self.sac_updates = 0, None, 0
        self.random_policy = UniformRandomPolicy(task)
        self.behaviour = self.planner()

    # ---------------------------------------------------------------- acting (Alg. 1 l.3)
    def planning_model(self):
        """PlanningModel over the live actor and critic and the latest fitted dynamics; None
        while a model-based algo has not fitted its ensemble yet."""
        if not self.learns_model:
            return ActorOnlyModel(self.sac.actor, self.sac.critic)
        if self.dynamics_module is None:
            return None
        return TorchPlanningModel(self.dynamics_module, self.sac.actor, self.sac.critic)

    def planner(self):
        """A new planner (its own warm start) for this algo; the uniform random policy
        while there is nothing to plan with yet."""
        model = self.planning_model()
        if model is None:
            return self.random_policy
        return ArcPlanner(model, self.task, self.arc, self.safety, self.controller)

    def act(self, state: np.ndarray, rng: np.random.Generator, explore: bool = True) -> np.ndarray:
        """Behaviour action (A,) for ``state (S,)``: uniform random during the seeding phase,
        else the planner's (explore: first action of a trajectory drawn by weight / actor sample)."""
        flush_denormals()
        policy = self.random_policy if explore and self.steps < self.schedule.seed_steps else self.behaviour
        return policy.plan(np.asarray(state, np.float32), rng, explore).action

    def actor_divergence(self, state: np.ndarray, action: np.ndarray) -> float | None:
        """||action - the actor's mean action|| on ``state (S,)``, the paper's Fig. 4 figure (how far
        the planner strays from the policy whose value ends its plans); None while acting at random,
        and for pets (no actor is learned)."""
        policy = self.behaviour
        if not self.learns_values or self.steps < self.schedule.seed_steps or not isinstance(policy, ArcPlanner):
            return None
        return actor_divergence(policy.model, state, action)

    def end_episode(self) -> None:
        """The behaviour planner forgets its warm start (the next state is a reset)."""
        self.behaviour.reset()

    # ---------------------------------------------------------------- learning (Alg. 1 l.5-7)
    def add_transition(self, s, a, r, s2, done) -> None:
        """Store (s (S,), a (A,), r, s' (S,), done); done only for a true terminal state, not a time limit."""
        self.buffer.add(s, a, r, s2, float(done))
        self.steps += 1

    def update(self) -> dict[str, float]:
        """Alg. 1 l.6: ``updates_per_step`` SAC steps on replay minibatches once the seeding
        phase is over; returns the last step's metrics ({} when nothing was updated)."""
        batch = self.sac.cfg.batch_size
        if not self.learns_values or self.steps < self.schedule.seed_steps or len(self.buffer) < batch:
            return {}
        flush_denormals()
        metrics: dict[str, float] = {}
        for _ in range(self.schedule.updates_per_step):
            metrics = self.sac.update(self.buffer.sample(batch, self.rng))
            self.sac_updates += 1
        return metrics

    def model_fit_due(self) -> bool:
        """First fit once the seeding phase is over, then every ``ensemble.update_every`` (K_m) steps."""
        if not self.learns_model or self.steps < self.schedule.seed_steps:
            return False
        return self.fitted_at is None or self.steps - self.fitted_at >= self.ensemble.cfg.update_every

    def refit_model_if_due(self, should_stop: Callable[[], bool] | None = None) -> dict | None:
        """Alg. 1 l.7: fit the ensemble when due; returns the fit's metrics, or None."""
        return self.fit_model(should_stop) if self.model_fit_due() else None

    def fit_model(self, should_stop: Callable[[], bool] | None = None) -> dict:
        """Fit the ensemble on the whole replay buffer and plan with the new elites from now on.

        A fit that ``should_stop`` ends early (``interrupted`` in the metrics; the caller is
        shutting down) does not count: the previous planning model stays, and the fit is still due.
        """
        flush_denormals()
        data = self.buffer.arrays()
        max_seconds = self.schedule.fit_max_seconds or None
        metrics = self.ensemble.fit(data["s"], data["a"], data["r"], data["s2"], self.rng, max_seconds=max_seconds,
                                    should_stop=should_stop)
        if metrics["interrupted"]:
            return metrics
        self.dynamics_module = self.ensemble.planning_module()
        self.fits, self.fitted_at = self.fits + 1, self.steps
        if self.learns_model:
            model = self.planning_model()
            self.behaviour = (self.behaviour.with_model(model) if isinstance(self.behaviour, ArcPlanner)
                              else self.planner())
        return metrics

    # ---------------------------------------------------------------- export
    def export(self, out_dir: str | Path, version: int, provenance: Mapping[str, Any]) -> Path:
        """Write a model bundle of the current networks (``bundle.export_bundle``).

        Algo ``sac`` has no dynamics model of its own: its bundle gets one fitted on the
        replay buffer here, so the bundle is complete (the 'actor' controller ignores it).
        """
        if not self.learns_model:
            self.fit_model()
        if self.dynamics_module is None:
            raise RuntimeError(f"nothing to export before the first model fit (after {self.schedule.seed_steps} steps)")
        extra = {"algo": self.algo, "controller": self.controller, "fits": self.fits, "sac_updates": self.sac_updates}
        return export_networks(out_dir, self.task, self.ensemble, self.sac, version, provenance, extra)

    def status(self) -> dict[str, Any]:
        """Counters for logs and diagnostics."""
        return {"steps": self.steps, "fits": self.fits, "sac_updates": self.sac_updates,
                "alpha": self.sac.alpha, "algo": self.algo}

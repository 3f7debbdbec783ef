"""What the planner calls on a model, as protocols (numpy float32 in and out).

``OrtPlanningModel`` (runtime.py, a bundle under ONNX Runtime) is a ``FusedRolloutModel``;
``TorchPlanningModel`` (torch_model.py) and the tests' ``PointMassModel`` are plain
``PlanningModel``s, which ``ArcPlanner`` rolls out with one dynamics call per step.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from loop_ros.core.config import TerminalValue


@runtime_checkable
class PlanningModel(Protocol):
    """K learned dynamics models (with reward heads), the SAC actor and its critic."""

    ensemble_size: int
    obs_dim: int
    act_dim: int

    def dynamics(self, state: np.ndarray, action: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """state (K,B,S), action (K,B,A), noise (K,B,S) -> next_state (K,B,S), reward (K,B); member k on row k."""
        ...

    def actor(self, state: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """state (B,S), noise (B,A) -> action (B,A); zero noise gives pi(s)."""
        ...

    def critic(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        """state (B,S), action (B,A) -> Q (B,)."""
        ...


@runtime_checkable
class FusedRolloutModel(PlanningModel, Protocol):
    """A ``PlanningModel`` that runs one ARC iteration's H steps (and the actor prior) in one call."""

    def prepare(self, horizon: int, terminal: TerminalValue) -> None:
        """Build what ``rollout`` needs for this horizon and terminal value (slow: off the control path)."""
        ...

    def rollout(self, state: np.ndarray, actions: np.ndarray, noise: np.ndarray,
                terminal: TerminalValue) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """state (K,B,S), actions (H,K,B,A), noise (H,K,B,S) -> states s_1..s_H (H,K,B,S), model rewards
        (H,K,B), q (K,B): Q(s_H, pi(s_H)) for DISCOUNTED, Q(s_{H-1}, a_{H-1}) for AUTHORS, None for NONE."""
        ...

    def actor_rollout(self, state: np.ndarray, actor_noise: np.ndarray) -> np.ndarray:
        """state (n,S), actor_noise (H,n,A) -> the actor's actions (H,n,A) through the ensemble-mean model."""
        ...


def actor_divergence(model: PlanningModel, state: np.ndarray, action: np.ndarray) -> float:
    """||action - pi(state)||: how far an executed action strays from the actor's mean action on
    ``state (S,)`` (the paper's Fig. 4 figure; the planner node's diagnostic, headless training's column)."""
    action = np.asarray(action)
    mean = model.actor(np.asarray(state, np.float32)[None], np.zeros((1, action.shape[-1]), np.float32))[0]
    return float(np.linalg.norm(action - mean))

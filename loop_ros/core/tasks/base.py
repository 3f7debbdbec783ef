"""What the planner, trainer and sim need to know about a task."""
from __future__ import annotations

import numpy as np

from loop_ros.core.config import SafetyConfig
from loop_ros.core.tasks.constraints import constraint_terms, position_cost


class Task:
    """Observation layout, vectorised reward r(s, a, s') and constraint cost c(s).

    Subclasses set ``name``, ``obs_dim``, ``act_dim``, ``action_low``/``action_high``
    and implement ``reward`` and ``position``. Every method takes arrays with any
    leading batch shape: states ``(..., obs_dim)``, actions ``(..., act_dim)``.
    """

    name: str = ""
    obs_dim: int = 0
    act_dim: int = 0
    action_low: np.ndarray
    action_high: np.ndarray
    reward_from_model: bool = False
    """True when the task has no closed-form reward: the planner uses the model's predicted reward."""

    def reward(self, state: np.ndarray, action: np.ndarray, next_state: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def position(self, state: np.ndarray) -> np.ndarray:
        """Planar position ``(..., 2)`` used by the constraint geometry and the plan path."""
        raise NotImplementedError

    def cost(self, state: np.ndarray, safety: SafetyConfig) -> np.ndarray:
        """Constraint cost c(s) in {0, 1}: 1 while the state violates the geometry."""
        return position_cost(self.position(state), constraint_terms(safety))

    def safe_action(self) -> np.ndarray:
        """Action published when no plan can be trusted (stale state, bad model): brake / zero."""
        return np.zeros(self.act_dim)

"""2-D point mass (double integrator): the small task the planner is tested on.

State (x, y, vx, vy), action (ax, ay) in [-1, 1]^2, dt = 0.1 s:
v' = v + a dt, p' = p + v' dt. Reward r = -|p' - goal| - 0.01 |a|^2.
"""
from __future__ import annotations

import numpy as np

from loop_ros.core.tasks.base import Task

DT = 0.1


def point_mass_step(state: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Exact dynamics, vectorised: (..., 4), (..., 2) -> (..., 4)."""
    v = state[..., 2:] + DT * action
    p = state[..., :2] + DT * v
    return np.concatenate([p, v], axis=-1)


class PointMassTask(Task):
    name = "point_mass"
    obs_dim = 4
    act_dim = 2

    def __init__(self, goal=(1.0, 0.0)):
        self.goal = np.asarray(goal, dtype=np.float32)
        self.action_low = -np.ones(2, dtype=np.float32)
        self.action_high = np.ones(2, dtype=np.float32)

    def reward(self, state, action, next_state):
        dist = np.linalg.norm(next_state[..., :2] - self.goal, axis=-1)
        return (-dist - 0.01 * np.sum(action**2, axis=-1)).astype(np.float32)

    def position(self, state):
        return state[..., :2]


TASK_CLASS = PointMassTask

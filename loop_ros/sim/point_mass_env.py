"""Point-mass env around ``point_mass_step``: the toy task the trainer's tests learn.

Same API as ``RcCarEnv``: ``reset(seed) -> obs``, ``step(action) -> (obs, reward, cost,
terminated, truncated, info)``. Episodes start near the origin at rest and are truncated
after ``episode_steps``; they never terminate.
"""
from __future__ import annotations

import numpy as np

from loop_ros.core.config import SafetyConfig

START_JITTER = 0.1
"""Start position uniform in [-0.1, 0.1]^2 (m), velocity 0."""


class PointMassEnv:
    """Acceleration in [-1, 1]^2 -> state (x, y, vx, vy); reward and cost from ``PointMassTask``."""

    def __init__(self, task, episode_steps: int = 50, seed: int | None = None, safety: SafetyConfig | None = None):
        self.task = task  # a PointMassTask: its exact dynamics, reward and step
        self.safety = safety or SafetyConfig()
        self.episode_steps = int(episode_steps)
        self.control_dt = task.dt
        self._rng = np.random.default_rng(seed)
        self._steps = 0
        self._obs = self.reset()

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start at rest near the origin; ``seed`` re-seeds the generator (else it continues)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        position = self._rng.uniform(-START_JITTER, START_JITTER, 2)
        self._obs = np.concatenate([position, np.zeros(2)])
        self._steps = 0
        return self._obs.copy()

    def step(self, action) -> tuple[np.ndarray, float, float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=float).reshape(2), self.task.action_low, self.task.action_high)
        obs = self.task.exact_step(self._obs, action)
        reward = float(self.task.reward(self._obs, action, obs))
        cost = float(self.task.cost(obs, self.safety))
        self._obs = obs
        self._steps += 1
        info = {"speed": float(np.hypot(obs[2], obs[3])), "step": self._steps}
        return obs.copy(), reward, cost, False, self._steps >= self.episode_steps, info

"""A known PlanningModel for the point mass: exact dynamics, per-member offsets, numpy only."""
from __future__ import annotations

import numpy as np

from loop_ros.core.tasks.point_mass import point_mass_step


class PointMassModel:
    """K members = exact dynamics + a small per-member offset + noise_std * noise.

    Actor: a poor linear-tanh policy (pushes towards ``actor_target``); critic: -value_scale * |p - goal|.
    """

    obs_dim, act_dim = 4, 2

    def __init__(self, ensemble_size=3, noise_std=0.01, member_spread=0.005, goal=(1.0, 0.0),
                 actor_target=(-1.0, 0.0), value_scale=1.0, seed=0):
        rng = np.random.default_rng(seed)
        self.ensemble_size = ensemble_size
        self.offsets = (member_spread * rng.standard_normal((ensemble_size, 1, 4))).astype(np.float32)
        self.noise_std = np.float32(noise_std)
        self.goal = np.asarray(goal, np.float32)
        self.actor_target = np.asarray(actor_target, np.float32)
        self.value_scale = np.float32(value_scale)
        self.calls = 0

    def dynamics(self, state, action, noise):
        self.calls += 1
        nxt = point_mass_step(state, action) + self.offsets + self.noise_std * noise
        reward = -np.linalg.norm(nxt[..., :2] - self.goal, axis=-1)
        return nxt.astype(np.float32), reward.astype(np.float32)

    def actor(self, state, noise):
        mu = 2.0 * (self.actor_target - state[..., :2]) - state[..., 2:]
        return np.tanh(mu + 0.3 * noise).astype(np.float32)

    def critic(self, state, action):
        return (-self.value_scale * np.linalg.norm(state[..., :2] - self.goal, axis=-1)).astype(np.float32)

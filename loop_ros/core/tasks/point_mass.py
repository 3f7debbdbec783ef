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

    dt = DT

    def position(self, state):
        return state[..., :2]

    def exact_step(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        """The true dynamics (the env's, and the test models')."""
        return point_mass_step(state, action)

    def make_env(self, safety, episode_steps=None, seed=None, control_dt=None):
        """``sim/point_mass_env.py`` (its step is the fixed ``DT``; ``control_dt`` is not used)."""
        from loop_ros.sim.point_mass_env import PointMassEnv

        return PointMassEnv(self, seed=seed, safety=safety, **({"episode_steps": episode_steps} if episode_steps else {}))


class PointMassModel:
    """A known PlanningModel for tests and measurements: K members = exact dynamics + a small per-member offset + noise_std * noise.

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

    def dynamics(self, state, action, noise):
        nxt = point_mass_step(state, action) + self.offsets + self.noise_std * noise
        reward = -np.linalg.norm(nxt[..., :2] - self.goal, axis=-1)
        return nxt.astype(np.float32), reward.astype(np.float32)

    def actor(self, state, noise):
        mu = 2.0 * (self.actor_target - state[..., :2]) - state[..., 2:]
        return np.tanh(mu + 0.3 * noise).astype(np.float32)

    def critic(self, state, action):
        return (-self.value_scale * np.linalg.norm(state[..., :2] - self.goal, axis=-1)).astype(np.float32)


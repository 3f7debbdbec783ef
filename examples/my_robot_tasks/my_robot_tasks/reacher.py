"""A point mass that reaches for a goal: state (x, y, vx, vy), action (ax, ay) in [-1, 1]^2.

Everything loop_ros needs to know about the task is declared here, on a ``loop_ros`` ``Task``:
dims and bounds, the reward, how states travel over ROS (a Float64MultiArray of the observation),
the safe action, a simulator, the params file and what the Foxglove view draws.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from loop_ros.core.tasks.base import ARRAY, Task

DT = 0.05
GOAL = (1.0, 0.5)


class ReacherTask(Task):
    name = "reacher"
    obs_dim = 4
    act_dim = 2
    action_low = -np.ones(2)
    action_high = np.ones(2)
    state_message = ARRAY
    params_file = str(Path(__file__).with_name("reacher.yaml"))

    def reward(self, state, action, next_state):
        distance = np.hypot(next_state[..., 0] - GOAL[0], next_state[..., 1] - GOAL[1])
        return -distance - 0.01 * np.sum(np.square(action), axis=-1)

    def position(self, state):
        return state[..., :2]  # the safety section's keep-in circle and obstacles apply to it

    def terminated(self, next_state):
        return np.hypot(next_state[..., 0], next_state[..., 1]) > 3.0  # fell off the table

    def view_circles(self):
        return [(GOAL[0], GOAL[1], 0.05)]

    def make_env(self, safety, episode_steps=None, seed=None, control_dt=None):
        return ReacherEnv(self, safety, episode_steps or 100, seed)


class ReacherEnv:
    """The simulator: v' = v + a dt, p' = p + v' dt, from rest near the origin."""

    def __init__(self, task: ReacherTask, safety, episode_steps: int, seed: int | None):
        self.task, self.safety, self.episode_steps, self.control_dt = task, safety, episode_steps, DT
        self._rng = np.random.default_rng(seed)
        self.reset()

    def reset(self, seed=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._state = np.concatenate([self._rng.uniform(-0.1, 0.1, 2), np.zeros(2)])
        self._steps = 0
        return self._state.copy()

    def step(self, action):
        action = np.asarray(action, dtype=float).reshape(2)
        if not np.all(np.isfinite(action)):
            action = self.task.safe_action()
        action = np.clip(action, self.task.action_low, self.task.action_high)
        velocity = self._state[2:] + DT * action
        state = np.concatenate([self._state[:2] + DT * velocity, velocity])
        reward = float(self.task.reward(self._state, action, state))
        cost = float(self.task.cost(state, self.safety))
        self._state, self._steps = state, self._steps + 1
        terminated = bool(self.task.terminated(state))
        truncated = not terminated and self._steps >= self.episode_steps
        return state.copy(), reward, cost, terminated, truncated, {"speed": float(np.hypot(*velocity))}

"""A gymnasium env behind the loop_ros env API (``Env`` in ``core/tasks/base.py``), for ``gym:<EnvId>`` tasks.

Episodes: ``episode_steps`` steps (default: the env's registered ``max_episode_steps``, else 1000),
then ``truncated``; ``terminated`` is the env's own flag (what ``GymMujocoTask.terminated`` restates)
or a non-finite observation. Each step advances the env's own ``dt`` (``control_dt``). The reward is
the env's; the cost is the task's (zero: these tasks have no position, so no constraint applies).
This module is the only one that imports gymnasium and MuJoCo for a known task.
"""
from __future__ import annotations

import gymnasium
import numpy as np

from loop_ros.core.config import SafetyConfig

DEFAULT_EPISODE_STEPS = 1000
"""Episode length of an env registered without ``max_episode_steps``."""


class GymEnv:
    """``task.env_id`` made with ``task.env_kwargs``; actions clipped to the task's bounds."""

    def __init__(self, task, safety: SafetyConfig | None = None, episode_steps: int | None = None,
                 seed: int | None = None):
        self.task = task  # a GymMujocoTask (its env_id and env_kwargs)
        self.safety = safety or SafetyConfig()
        made = gymnasium.make(self.task.env_id, disable_env_checker=True, **self.task.env_kwargs)
        registered_steps = made.spec.max_episode_steps if made.spec is not None else None
        self.episode_steps = int(episode_steps or registered_steps or DEFAULT_EPISODE_STEPS)
        # Without gymnasium's wrappers: its TimeLimit would truncate at the registered length, while
        # ours truncates at episode_steps, which the sim node may edit mid-run.
        self.env = made.unwrapped
        obs_shape, act_shape = self.env.observation_space.shape, self.env.action_space.shape
        if obs_shape != (self.task.obs_dim,) or act_shape != (self.task.act_dim,):
            raise ValueError(f"{self.task.env_id}: spaces {obs_shape} / {act_shape} differ from the task's "
                             f"({self.task.obs_dim},) / ({self.task.act_dim},)")
        self.control_dt = float(getattr(self.env, "dt", None) or 1.0 / self.env.metadata.get("render_fps", 20))
        self._action_dtype = self.env.action_space.dtype
        self._steps = 0
        self._obs = self.reset(seed)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """The env's start state; ``seed`` re-seeds the env (else its generator continues)."""
        obs, _ = self.env.reset(seed=seed)
        self._obs = np.array(obs, dtype=np.float64)
        self._steps = 0
        return self._obs.copy()

    def step(self, action) -> tuple[np.ndarray, float, float, bool, bool, dict]:
        """One env step: ``(obs, reward, cost, terminated, truncated, info)``; ``info`` has ``speed``
        (the env's forward ``x_velocity``, m/s, or 0) and ``step`` (steps since the reset).

        A non-finite or wrongly sized action becomes the task's safe action; the rest is clipped.
        """
        action = self._valid_action(action)
        # The space's dtype (float32): some envs assert ``action_space.contains``, which a float64 fails.
        obs, reward, terminated, _, info = self.env.step(action.astype(self._action_dtype))
        self._steps += 1
        obs = np.array(obs, dtype=np.float64)
        terminated = bool(terminated) or not bool(np.all(np.isfinite(obs)))
        truncated = not terminated and self._steps >= self.episode_steps
        cost = float(self.task.cost(obs, self.safety))
        self._obs = obs
        info = {"speed": float(info.get("x_velocity", 0.0)), "step": self._steps}
        return obs.copy(), float(reward), cost, terminated, truncated, info

    def close(self) -> None:
        self.env.close()

    def _valid_action(self, action) -> np.ndarray:
        try:
            action = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            action = np.full(self.task.act_dim, np.nan)
        if action.size != self.task.act_dim or not np.all(np.isfinite(action)):
            action = self.task.safe_action()
        return np.clip(action.reshape(self.task.act_dim), self.task.action_low, self.task.action_high)

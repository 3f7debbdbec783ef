"""The task specification: everything task-specific, declared once.

Every command, node, the supervisor and the launch file read a task only through this
interface (``loop_ros.core.tasks.make_task`` finds it by name); no other module names a task.
A user's own robot is one subclass in the user's own package (README, "Your own task").
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from loop_ros.core.config import SafetyConfig
from loop_ros.core.tasks.constraints import constraint_terms, position_cost

ODOMETRY = "odometry"
"""States travel as nav_msgs/Odometry (a planar pose, REP-105); the task converts it with ``obs_from_pose``."""
ARRAY = "array"
"""States travel as std_msgs/Float64MultiArray: the observation, then the task's ``state_extras``."""


class Env(Protocol):
    """A simulator of a task, gymnasium-like, as ``Task.make_env`` returns it."""

    task: Task
    episode_steps: int
    control_dt: float
    safety: SafetyConfig

    def reset(self, seed: int | None = None) -> np.ndarray: ...

    def step(self, action) -> tuple[np.ndarray, float, float, bool, bool, dict]:
        """``(obs, reward, cost, terminated, truncated, info)``; ``info`` has ``speed`` (m/s, or 0)."""
        ...


class Task:
    """Observation and action layout, reward, constraint cost, termination, messages, simulator, view.

    Subclasses set ``name``, ``obs_dim``, ``act_dim``, ``action_low``/``action_high`` and implement
    ``reward`` (unless ``reward_from_model``). Every array method takes any leading batch shape:
    states ``(..., obs_dim)``, actions ``(..., act_dim)``.
    """

    name: str = ""
    obs_dim: int = 0
    act_dim: int = 0
    action_low: np.ndarray
    action_high: np.ndarray
    reward_from_model: bool = False
    """True when the task has no closed-form reward: the planner uses the model's reward head, and
    the sim reports each step's reward in the state message (``state_extras``)."""
    state_message: str = ARRAY
    """How a state travels over ROS: ``ODOMETRY`` or ``ARRAY``."""
    params_file: str | None = None
    """Default params YAML of the task (a path, or one relative to the package data, e.g. ``config/rc_car.yaml``)."""
    default_bundle: str | None = None
    """The model bundle a planner loads when the params do not name one (None: start without a model)."""
    target_speed: float | None = None
    """The speed the task asks for (m/s), reported beside the measured speed; None when it asks for none."""

    # ------------------------------------------------------------ dynamics-side functions
    def reward(self, state: np.ndarray, action: np.ndarray, next_state: np.ndarray) -> np.ndarray:
        """r(s, a, s') ``(...)``; only called when ``reward_from_model`` is False."""
        raise NotImplementedError(f"task {self.name!r} has no closed-form reward")

    def terminated(self, next_state: np.ndarray) -> np.ndarray:
        """True where s' ends the episode (a fall, a crash): the planner stops collecting reward there
        and takes no terminal value behind it; the critic does not bootstrap through it. ``(...)`` bool."""
        return np.zeros(np.shape(next_state)[:-1], dtype=bool)

    def position(self, state: np.ndarray) -> np.ndarray | None:
        """Planar position ``(..., 2)`` for the constraint geometry and the plan view; None when the
        task has none (no constraint can apply, nothing to draw)."""
        return None

    def cost(self, state: np.ndarray, safety: SafetyConfig) -> np.ndarray:
        """Constraint cost c(s) in {0, 1}: 1 while the state violates the geometry."""
        xy = self.position(state)
        if xy is None:
            return np.zeros(np.shape(state)[:-1], dtype=np.asarray(state).dtype)
        return position_cost(xy, constraint_terms(safety))

    def safe_action(self) -> np.ndarray:
        """Action published when no plan can be trusted (stale state, bad model): brake / zero."""
        return np.clip(np.zeros(self.act_dim), self.action_low, self.action_high)

    # ------------------------------------------------------------ messages
    @property
    def state_extras(self) -> tuple[str, ...]:
        """Values an ``ARRAY`` state message carries after the observation (``core.array_state``):
        when the reward is learned, the ``action`` applied in the step into this state, its
        ``reward``, ``step`` (steps since the episode's reset: 0 marks a reset state) and
        ``terminated`` (this state ended its episode by termination): a transition's end, whole."""
        return ("action", "reward", "step", "terminated") if self.reward_from_model else ()

    def obs_from_pose(self, x, y, yaw, vx_world, vy_world, yaw_rate) -> np.ndarray:
        """``ODOMETRY`` tasks: world pose and velocity -> observation ``(..., obs_dim)``."""
        raise NotImplementedError(f"task {self.name!r} does not take Odometry states")

    # ------------------------------------------------------------ simulator and view
    def make_env(self, safety: SafetyConfig, episode_steps: int | None = None, seed: int | None = None,
                 control_dt: float | None = None) -> Env:
        """The task's simulator (``episode_steps`` / ``control_dt`` None: its defaults); raises
        ``NoSimulator`` for a task that runs only on a real robot."""
        raise NoSimulator(f"task {self.name!r} has no simulator")

    @property
    def has_simulator(self) -> bool:
        return type(self).make_env is not Task.make_env

    def start_state(self) -> np.ndarray:
        """A typical state ``(obs_dim,)`` the benchmarks plan from; default: seeded normals * 0.1."""
        return np.random.default_rng(0).standard_normal(self.obs_dim) * 0.1

    def view_circles(self) -> list[tuple[float, float, float]]:
        """Targets (x, y, radius) the Foxglove view draws besides the constraint geometry."""
        return []

    def describe(self) -> dict[str, Any]:
        """What a bundle records of the task it was trained for (checked by the planner)."""
        return {"task": self.name, "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                "action_low": np.asarray(self.action_low, dtype=float).tolist(),
                "action_high": np.asarray(self.action_high, dtype=float).tolist()}


class NoSimulator(RuntimeError):
    """The task has no simulator (``Task.make_env``)."""

"""Gymnasium MuJoCo tasks, ``gym:<EnvId>`` (``gym:Hopper-v5``): the LOOP paper's online RL benchmarks.

The reward is learned (``reward_from_model``): the planner scores plans with the ensemble's reward
head, as the paper does (Appendix C.1), and the sim reports each step's reward in the state message.
Termination is not learned: like the LOOP and MBPO authors' code (a static ``termination_function``
per env, e.g. LOOP's ``envs/walker2d.py``), each known env has its closed-form health check here,
restated from gymnasium's v5 sources so that ``terminated(obs)`` equals the env's own flag.

``KNOWN_ENVS`` holds the spaces of the envs the paper used (v5 versions), so building the task for
them imports neither gymnasium nor MuJoCo: the planner node needs only the spec. Any other env id
is made once with gymnasium to read its spaces, and its states end an episode only when non-finite
(its own termination is not known here, and a learned termination is not attempted).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from loop_ros.core.config import SafetyConfig
from loop_ros.core.tasks.base import ARRAY, Env, Task


def _finite(state: np.ndarray) -> np.ndarray:
    return np.all(np.isfinite(state), axis=-1)


# Termination functions: next state (..., obs_dim) -> bool (...). Each restates the v5 env's
# ``is_healthy`` (gymnasium/envs/mujoco/<env>_v5.py) on the observation, with its default kwargs:
# the x (and for Ant y) position is excluded from the observation, so obs[0] is qpos[1] (the
# torso height z) for Hopper/Walker2d and qpos[2] for Ant. A non-finite state always terminates
# (a numerical failure, and NaN compares False, so it would also fail every range check below).

def hopper_terminated(state: np.ndarray) -> np.ndarray:
    """hopper_v5.py ``is_healthy``: all of state_vector()[2:] in (-100, 100), z in (0.7, inf), angle
    in (-0.2, 0.2), strict. state_vector()[2:] is qpos[2:] and qvel, i.e. obs[1:], except that the
    observation clips qvel to +-10: an unclipped |qvel| >= 100 (which the env would also end on) is
    not observable, and a state's clipped velocities always pass."""
    z, angle, rest = state[..., 0], state[..., 1], state[..., 1:]
    healthy_state = np.all((-100.0 < rest) & (rest < 100.0), axis=-1)
    healthy_z = (0.7 < z) & (z < np.inf)
    healthy_angle = (-0.2 < angle) & (angle < 0.2)
    return ~(healthy_state & healthy_z & healthy_angle) | ~_finite(state)


def walker2d_terminated(state: np.ndarray) -> np.ndarray:
    """walker2d_v5.py ``is_healthy``: z in (0.8, 2.0) and angle in (-1, 1), strict."""
    z, angle = state[..., 0], state[..., 1]
    healthy = (0.8 < z) & (z < 2.0) & (-1.0 < angle) & (angle < 1.0)
    return ~healthy | ~_finite(state)


def ant_terminated(state: np.ndarray) -> np.ndarray:
    """ant_v5.py ``is_healthy``: the state vector finite and z in [0.2, 1.0], inclusive. Without the
    contact forces the observation is state_vector()[2:] (all but x, y)."""
    z = state[..., 0]
    healthy = _finite(state) & (0.2 <= z) & (z <= 1.0)
    return ~healthy


def inverted_pendulum_terminated(state: np.ndarray) -> np.ndarray:
    """inverted_pendulum_v5.py ``step``: obs non-finite or |pole angle obs[1]| > 0.2."""
    return ~_finite(state) | (np.abs(state[..., 1]) > 0.2)


def non_finite_terminated(state: np.ndarray) -> np.ndarray:
    """HalfCheetah (no fall) and unknown envs: only a non-finite state ends the episode."""
    return ~_finite(state)


class KnownEnv(NamedTuple):
    obs_dim: int
    act_dim: int
    low: float
    high: float
    kwargs: dict[str, Any]
    """Passed to ``gymnasium.make`` (the task's spaces and termination assume them)."""
    terminated: Callable[[np.ndarray], np.ndarray]


KNOWN_ENVS: dict[str, KnownEnv] = {
    "InvertedPendulum-v5": KnownEnv(4, 1, -3.0, 3.0, {}, inverted_pendulum_terminated),
    "Hopper-v5": KnownEnv(11, 3, -1.0, 1.0, {}, hopper_terminated),
    "Walker2d-v5": KnownEnv(17, 6, -1.0, 1.0, {}, walker2d_terminated),
    "HalfCheetah-v5": KnownEnv(17, 6, -1.0, 1.0, {}, non_finite_terminated),
    # MBPO and LOOP ran Ant with the truncated observation (qpos[2:], qvel: 27-D, no contact forces):
    # v5 includes the 78 clipped contact forces by default (105-D).
    "Ant-v5": KnownEnv(27, 8, -1.0, 1.0, {"include_cfrc_ext_in_observation": False}, ant_terminated),
}


class GymMujocoTask(Task):
    """A gymnasium env as a task: its Box spaces, a learned reward, its static termination function."""

    reward_from_model = True
    state_message = ARRAY
    params_file = "config/gym_mujoco.yaml"
    default_bundle = None

    def __init__(self, env_id: str):
        self.env_id = env_id
        self.name = f"gym:{env_id}"
        known = KNOWN_ENVS.get(env_id)
        if known is not None:
            self.obs_dim, self.act_dim = known.obs_dim, known.act_dim
            self.action_low = np.full(known.act_dim, known.low)
            self.action_high = np.full(known.act_dim, known.high)
            self.env_kwargs = dict(known.kwargs)
            self._terminated = known.terminated
        else:
            self.obs_dim, self.act_dim, self.action_low, self.action_high = _read_spaces(env_id)
            self.env_kwargs = {}
            self._terminated = non_finite_terminated

    def terminated(self, next_state: np.ndarray) -> np.ndarray:
        """The env's own termination (module notes), ``(..., obs_dim) -> (...)`` bool."""
        return np.asarray(self._terminated(np.asarray(next_state, dtype=float)), dtype=bool)

    def make_env(self, safety: SafetyConfig, episode_steps: int | None = None, seed: int | None = None,
                 control_dt: float | None = None) -> Env:
        """A ``GymEnv``; ``control_dt`` is ignored: a gym env steps its own ``dt`` (frame_skip physics
        steps) per action, and the ROS loop's wall-clock rate is ``task.control_rate_hz``."""
        from loop_ros.sim.gym_env import GymEnv

        return GymEnv(self, safety=safety, episode_steps=episode_steps, seed=seed)


def _read_spaces(env_id: str) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(obs_dim, act_dim, low, high) of an env not in ``KNOWN_ENVS``, from ``gymnasium.make``."""
    from loop_ros.core.tasks import TaskError  # here: the registry imports this module

    try:
        import gymnasium
        from gymnasium.spaces import Box

        env = gymnasium.make(env_id, disable_env_checker=True)
    except Exception as error:  # unknown id, missing extra, bad env: all one answer
        raise TaskError(f"task 'gym:{env_id}': gymnasium cannot make it: {error!r}") from error
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if not (isinstance(obs_space, Box) and isinstance(act_space, Box)
            and len(obs_space.shape) == 1 and len(act_space.shape) == 1):
        raise TaskError(f"task 'gym:{env_id}': needs 1-D Box observation and action spaces, "
                        f"got {obs_space} and {act_space}")
    return (int(obs_space.shape[0]), int(act_space.shape[0]),
            np.asarray(act_space.low, dtype=float), np.asarray(act_space.high, dtype=float))

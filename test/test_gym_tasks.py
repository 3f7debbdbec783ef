"""gym:<EnvId> tasks: the spec table against gymnasium, the termination functions against the envs'
own flags, and the ``GymEnv`` adapter's API."""
from __future__ import annotations

import subprocess
import sys

import gymnasium
import numpy as np
import pytest

from loop_ros.core.config import SafetyConfig
from loop_ros.core.tasks import TaskError, make_task
from loop_ros.core.tasks.gym_mujoco import KNOWN_ENVS, GymMujocoTask
from loop_ros.sim.gym_env import GymEnv

ENV_IDS = sorted(KNOWN_ENVS)
TERMINATING = {"InvertedPendulum-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5"}
ROLLOUTS, MAX_STEPS = 4, 300  # HalfCheetah never ends: its rollouts stop at MAX_STEPS


def random_rollouts(env_id: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Observations after each step of seeded uniform-random rollouts of the gymnasium env itself,
    and the env's ``terminated`` flag there."""
    env = gymnasium.make(env_id, **KNOWN_ENVS[env_id].kwargs)
    space, rng = env.action_space, np.random.default_rng(seed)
    observations, flags = [], []
    for episode in range(ROLLOUTS):
        env.reset(seed=seed + episode)
        for _ in range(MAX_STEPS):
            obs, _, terminated, truncated, _ = env.step(rng.uniform(space.low, space.high).astype(space.dtype))
            observations.append(obs)
            flags.append(terminated)
            if terminated or truncated:
                break
    env.close()
    return np.array(observations), np.array(flags)


@pytest.fixture(scope="module")
def rollouts():
    return {env_id: random_rollouts(env_id) for env_id in ENV_IDS}


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_table_matches_gymnasium_spaces(env_id):
    known, task = KNOWN_ENVS[env_id], GymMujocoTask(env_id)
    env = gymnasium.make(env_id, **known.kwargs)
    assert env.observation_space.shape == (task.obs_dim,)
    assert env.action_space.shape == (task.act_dim,)
    np.testing.assert_array_equal(task.action_low, env.action_space.low)
    np.testing.assert_array_equal(task.action_high, env.action_space.high)
    env.close()
    assert task.name == f"gym:{env_id}" and task.reward_from_model and task.default_bundle is None
    assert task.position(np.zeros(task.obs_dim)) is None
    np.testing.assert_array_equal(task.safe_action(), np.zeros(task.act_dim))


def test_ant_observation_is_truncated():
    assert KNOWN_ENVS["Ant-v5"].kwargs == {"include_cfrc_ext_in_observation": False}
    assert GymMujocoTask("Ant-v5").obs_dim == 27


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_terminated_agrees_with_the_env(env_id, rollouts):
    observations, flags = rollouts[env_id]
    task = GymMujocoTask(env_id)
    predicted = np.array([task.terminated(obs) for obs in observations])
    np.testing.assert_array_equal(predicted, flags)
    if env_id in TERMINATING:  # random actions make it fall: both values were compared
        assert flags.any() and not flags.all()
    else:
        assert not flags.any() and len(flags) == ROLLOUTS * MAX_STEPS


# Health-check bounds of the v5 sources, hit exactly and just inside or outside (EPS): Hopper and
# Walker2d compare strictly, Ant inclusively.
EPS = 1e-9
BOUNDARY_QPOS = {
    "Hopper-v5": [(1, 0.7), (1, 0.7 + EPS), (2, 0.2), (2, 0.2 - EPS), (2, -0.2), (2, -0.2 + EPS),
                  (3, 100.0), (3, 100.0 - EPS), (3, -100.0)],
    "Walker2d-v5": [(1, 0.8), (1, 0.8 + EPS), (1, 2.0), (1, 2.0 - EPS), (2, 1.0), (2, 1.0 - EPS),
                    (2, -1.0), (2, -1.0 + EPS)],
    "Ant-v5": [(2, 0.2), (2, 0.2 - EPS), (2, 1.0), (2, 1.0 + EPS)],
}


@pytest.mark.parametrize("env_id", sorted(BOUNDARY_QPOS))
def test_terminated_at_the_health_bounds(env_id):
    env, task = gymnasium.make(env_id, **KNOWN_ENVS[env_id].kwargs).unwrapped, GymMujocoTask(env_id)
    env.reset(seed=0)
    for index, value in BOUNDARY_QPOS[env_id]:
        qpos = env.init_qpos.copy()
        qpos[index] = value
        env.set_state(qpos, env.init_qvel)
        assert bool(task.terminated(env._get_obs())) == (not env.is_healthy), (index, value)
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_terminated_batched_equals_per_row(env_id, rollouts):
    observations, _ = rollouts[env_id]
    task = GymMujocoTask(env_id)
    rows = observations[:24].copy()
    rows[3, 2] = np.nan
    rows[5, -1] = np.inf
    batch = rows.reshape(4, 6, task.obs_dim)
    result = task.terminated(batch)
    assert result.shape == (4, 6) and result.dtype == bool
    np.testing.assert_array_equal(result.reshape(-1), [bool(task.terminated(row)) for row in rows])
    assert result.reshape(-1)[3] and result.reshape(-1)[5]  # non-finite states terminate


def test_known_tasks_are_built_without_gymnasium():
    code = ("import sys\nfrom loop_ros.core.tasks import make_task\n"
            f"for env_id in {ENV_IDS!r}:\n    make_task('gym:' + env_id)\n"
            "assert 'gymnasium' not in sys.modules and 'mujoco' not in sys.modules, 'imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unknown_env_ids():
    with pytest.raises(TaskError, match="gymnasium cannot make it"):
        make_task("gym:NoSuchEnv-v0")
    with pytest.raises(TaskError, match="1-D Box"):
        make_task("gym:CartPole-v1")  # discrete actions
    task = make_task("gym:Pendulum-v1")  # any 1-D Box env: spaces read from gymnasium, never terminates
    assert (task.obs_dim, task.act_dim) == (3, 1)
    np.testing.assert_array_equal([task.action_low, task.action_high], [[-2.0], [2.0]])
    assert not task.terminated(np.ones((2, 3))).any() and task.terminated(np.full(3, np.nan))


def test_env_api_types_and_shapes():
    task = make_task("gym:Hopper-v5")
    env = task.make_env(SafetyConfig(), seed=0, control_dt=0.05)  # control_dt ignored: the env's own dt
    assert isinstance(env, GymEnv) and env.task is task
    assert env.episode_steps == 1000 and env.control_dt == pytest.approx(0.008)
    obs = env.reset(seed=1)
    assert isinstance(obs, np.ndarray) and obs.shape == (11,) and obs.dtype == np.float64
    obs[:] = 1e3  # a copy: the env's state is untouched
    obs, reward, cost, terminated, truncated, info = env.step(np.full(3, 0.1))
    assert obs.shape == (11,) and obs.dtype == np.float64 and obs[0] < 2.0
    assert type(reward) is float and cost == 0.0 and type(cost) is float
    assert type(terminated) is bool and type(truncated) is bool
    assert info["step"] == 1 and type(info["speed"]) is float
    for _ in range(200):  # its flag is the task's termination function
        obs, _, _, terminated, truncated, info = env.step(np.ones(3))
        assert terminated == bool(task.terminated(obs))
        if terminated:
            break
    assert terminated and not truncated


def test_env_truncates_at_episode_steps():
    env = GymEnv(GymMujocoTask("HalfCheetah-v5"), episode_steps=5, seed=0)
    assert [env.step(np.zeros(6))[4] for _ in range(5)] == [False] * 4 + [True]
    env.reset()
    env.episode_steps = 2  # an edit takes effect in the running episode
    assert [env.step(np.zeros(6))[4] for _ in range(2)] == [False, True]
    assert env.step(np.zeros(6))[5]["step"] == 3  # the caller resets; the env does not
    info = env.step(np.ones(6))[5]
    assert info["speed"] != 0.0  # the env's x_velocity


def applied_actions(env: GymEnv) -> list[np.ndarray]:
    """Records each action ``env`` hands to the gymnasium env (MuJoCo itself would zero a NaN control
    and clamp to the control range, so the outcome alone cannot tell)."""
    applied, step = [], env.env.step
    env.env.step = lambda action: (applied.append(np.array(action)), step(action))[1]
    return applied


@pytest.mark.parametrize("bad_action", [np.array([np.nan, 0.0, 0.0, 0.0, 0.0, 0.0]), np.zeros(4), "go", None])
def test_bad_action_becomes_the_safe_action(bad_action):
    env = GymEnv(GymMujocoTask("HalfCheetah-v5"), seed=3)
    applied = applied_actions(env)
    env.step(bad_action)  # does not raise
    np.testing.assert_array_equal(applied, [env.task.safe_action()])


def test_actions_are_clipped():
    env = GymEnv(GymMujocoTask("InvertedPendulum-v5"), seed=0)
    applied = applied_actions(env)
    env.step([50.0])
    env.step(np.array([[-0.5]]))
    np.testing.assert_array_equal(applied, [[3.0], [-0.5]])
    assert applied[0].dtype == env.env.action_space.dtype


def test_env_is_deterministic_for_a_seed():
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 8))

    def run(env):
        return np.array([env.step(a)[0] for a in actions])

    first, second = GymEnv(GymMujocoTask("Ant-v5"), seed=5), GymEnv(GymMujocoTask("Ant-v5"), seed=5)
    start = first._obs.copy()
    np.testing.assert_array_equal(run(first), run(second))
    np.testing.assert_array_equal(first.reset(seed=5), start)  # reset(seed) re-seeds
    assert not np.array_equal(first.reset(), start)  # reset() continues the generator

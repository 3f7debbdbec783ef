"""The ``Task`` contract (``core/tasks/base.py``), checked on every registered task: the shipped
ones (``BUILTIN_TASKS``), installed ``loop_ros.tasks`` entry points (``known_task_names``) and
``gym:<EnvId>`` of every ``KNOWN_ENVS`` id. Plus the registry's refusals: an unknown name, a
``module:attribute`` that is no Task, and Tasks that break the contract (defined below and found
as ``<this module>:<name>``)."""
from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from loop_ros.core.array_state import array_state_values, extra_sizes, parse_array_state
from loop_ros.core.config import SafetyConfig
from loop_ros.core.odometry import odometry_fields, pose_from_odometry
from loop_ros.core.tasks import BUILTIN_TASKS, TaskError, checked_task, known_task_names, make_task
from loop_ros.core.tasks.base import ARRAY, ODOMETRY, Task
from loop_ros.core.tasks.gym_mujoco import KNOWN_ENVS

TASK_NAMES = sorted(set(BUILTIN_TASKS) | set(known_task_names())) + [f"gym:{env_id}" for env_id in sorted(KNOWN_ENVS)]
LEADING_SHAPES = [(7,), (3, 5)]
# A geometry with both constraint terms, so a task with a position has a cost that is not all zeros.
SAFETY = SafetyConfig(keep_in_radius=1.0, obstacles=(0.5, 0.5, 0.3))


@pytest.fixture(scope="module", params=TASK_NAMES)
def task(request) -> Task:
    return make_task(request.param)


def random_batch(task: Task, lead: tuple[int, ...], seed: int = 0):
    """States, actions (within the bounds) and next states with the leading shape ``lead``."""
    rng = np.random.default_rng(seed)
    states = rng.standard_normal((*lead, task.obs_dim))
    actions = rng.uniform(task.action_low, task.action_high, (*lead, task.act_dim))
    next_states = states + 0.1 * rng.standard_normal(states.shape)
    return states, actions, next_states


# ---------------------------------------------------------------- the spec


def test_every_registered_task_is_covered():
    assert {"rc_car", "point_mass"} <= set(TASK_NAMES)
    assert {f"gym:{env_id}" for env_id in KNOWN_ENVS} <= set(TASK_NAMES)


def test_spec(task):
    assert checked_task(task) is task
    assert isinstance(task.name, str) and task.name
    assert task.obs_dim > 0 and task.act_dim > 0
    low, high = np.asarray(task.action_low, dtype=float), np.asarray(task.action_high, dtype=float)
    assert low.shape == high.shape == (task.act_dim,)
    assert np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)
    safe = np.asarray(task.safe_action(), dtype=float)
    assert safe.shape == (task.act_dim,) and np.all(low <= safe) and np.all(safe <= high)
    assert task.state_message in (ARRAY, ODOMETRY)
    assert np.asarray(task.start_state()).shape == (task.obs_dim,)


def test_describe(task):
    described = task.describe()
    assert described["task"] == task.name
    assert (described["obs_dim"], described["act_dim"]) == (task.obs_dim, task.act_dim)
    np.testing.assert_array_equal(described["action_low"], np.asarray(task.action_low, dtype=float))
    np.testing.assert_array_equal(described["action_high"], np.asarray(task.action_high, dtype=float))


def test_make_task_finds_the_same_task_again(task):
    again = make_task(task.name)
    assert type(again) is type(task) and again.describe() == task.describe()


@pytest.mark.parametrize("lead", LEADING_SHAPES, ids=str)
def test_vectorised_functions_keep_the_leading_shape(task, lead):
    states, actions, next_states = random_batch(task, lead)
    if not task.reward_from_model:
        reward = np.asarray(task.reward(states, actions, next_states))
        assert reward.shape == lead and np.all(np.isfinite(reward))
    cost = np.asarray(task.cost(next_states, SAFETY))
    assert cost.shape == lead and np.all((cost == 0) | (cost == 1))
    terminated = np.asarray(task.terminated(next_states))
    assert terminated.shape == lead and terminated.dtype == bool
    position = task.position(next_states)
    if position is not None:
        assert np.asarray(position).shape == (*lead, 2)


def test_vectorised_functions_agree_with_one_state_at_a_time(task):
    states, actions, next_states = random_batch(task, (3, 5), seed=1)
    flat = [(s, a, n) for s, a, n in zip(states.reshape(-1, task.obs_dim), actions.reshape(-1, task.act_dim),
                                         next_states.reshape(-1, task.obs_dim))]
    np.testing.assert_array_equal(task.terminated(next_states).reshape(-1), [task.terminated(n) for _, _, n in flat])
    np.testing.assert_array_equal(task.cost(next_states, SAFETY).reshape(-1),
                                  [task.cost(n, SAFETY) for _, _, n in flat])
    if not task.reward_from_model:
        np.testing.assert_allclose(task.reward(states, actions, next_states).reshape(-1),
                                   [task.reward(s, a, n) for s, a, n in flat], rtol=1e-6)


# ---------------------------------------------------------------- messages


def test_array_message_round_trip(task):
    if task.state_message != ARRAY:
        pytest.skip(f"{task.name} states travel as {task.state_message}")
    rng = np.random.default_rng(2)
    obs = rng.standard_normal(task.obs_dim)
    action = rng.uniform(task.action_low, task.action_high)
    values = array_state_values(task, obs, action, reward=1.5, step=3, terminated=True)
    assert values.shape == (task.obs_dim + sum(extra_sizes(task).values()),)
    parsed = parse_array_state(values.tolist(), task)
    assert parsed is not None
    np.testing.assert_array_equal(parsed.obs, obs)
    extras = task.state_extras
    assert parsed.reward == (1.5 if "reward" in extras else None)
    assert parsed.step == (3 if "step" in extras else None)
    assert parsed.terminated == (True if "terminated" in extras else None)
    if "action" in extras:
        np.testing.assert_array_equal(parsed.action, action)
        out_of_bounds = values.copy()
        out_of_bounds[task.obs_dim] = task.action_high[0] + 1.0
        assert parse_array_state(out_of_bounds.tolist(), task) is None
    if task.reward_from_model:  # the sim must send the reward it learns from
        assert "reward" in extras
    # Wrong sizes and non-finite values are refused.
    assert parse_array_state(values[:-1].tolist(), task) is None
    assert parse_array_state([*values.tolist(), 0.0], task) is None
    for bad in (math.nan, math.inf):
        broken = values.copy()
        broken[0] = bad
        assert parse_array_state(broken.tolist(), task) is None


def odometry_message(fields: dict[str, float]) -> SimpleNamespace:
    """A duck-typed nav_msgs/Odometry carrying ``odometry_fields`` (the nodes fill rclpy's alike)."""
    return SimpleNamespace(
        pose=SimpleNamespace(pose=SimpleNamespace(
            position=SimpleNamespace(x=fields["x"], y=fields["y"], z=0.0),
            orientation=SimpleNamespace(x=0.0, y=0.0, z=fields["qz"], w=fields["qw"]))),
        twist=SimpleNamespace(twist=SimpleNamespace(
            linear=SimpleNamespace(x=fields["v_long"], y=fields["v_lat"], z=0.0),
            angular=SimpleNamespace(x=0.0, y=0.0, z=fields["yaw_rate"]))))


def assert_same_pose(actual, expected):
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape == (6,)
    yaw_gap = (actual[2] - expected[2] + np.pi) % (2 * np.pi) - np.pi
    assert abs(yaw_gap) < 1e-9
    np.testing.assert_allclose(np.delete(actual, 2), np.delete(expected, 2), atol=1e-9)


def test_odometry_pose_matches_the_env_and_round_trips(task):
    if task.state_message != ODOMETRY:
        pytest.skip(f"{task.name} states travel as {task.state_message}")
    # Odometry through its fields and back gives the pose, for poses all round the yaw circle.
    rng = np.random.default_rng(3)
    for yaw in np.linspace(-np.pi + 0.01, np.pi - 0.01, 9):
        pose = np.array([*rng.uniform(-2, 2, 2), yaw, *rng.uniform(-3, 3, 3)])
        assert_same_pose(pose_from_odometry(odometry_message(odometry_fields(pose))), pose)
        np.testing.assert_allclose(task.obs_from_pose(*pose), task.obs_from_pose(*pose_from_odometry(
            odometry_message(odometry_fields(pose)))), atol=1e-9)
    broken = odometry_fields(pose)
    broken["v_long"] = math.nan
    assert pose_from_odometry(odometry_message(broken)) is None
    broken = odometry_fields(pose)
    broken["qz"], broken["qw"] = 0.5, 0.5  # no unit quaternion (norm 0.71)
    assert pose_from_odometry(odometry_message(broken)) is None
    # Vectorised over poses.
    poses = rng.uniform(-1, 1, (4, 6))
    assert np.asarray(task.obs_from_pose(*poses.T)).shape == (4, task.obs_dim)
    if not task.has_simulator:
        return
    # The env's observation is the task's view of the env's pose, at the reset and after a step.
    env = task.make_env(SafetyConfig(), seed=0)
    obs = env.reset(seed=0)
    np.testing.assert_allclose(task.obs_from_pose(*env.pose()), obs, atol=1e-12)
    obs = env.step(task.safe_action())[0]
    pose = env.pose()
    np.testing.assert_allclose(task.obs_from_pose(*pose), obs, atol=1e-12)
    np.testing.assert_allclose(task.obs_from_pose(*pose_from_odometry(odometry_message(odometry_fields(pose)))),
                               obs, atol=1e-9)


# ---------------------------------------------------------------- simulator


def test_simulator_resets_and_steps(task):
    if not task.has_simulator:
        pytest.skip(f"{task.name} has no simulator")
    env = task.make_env(SafetyConfig(), episode_steps=3, seed=0)
    try:
        assert env.episode_steps == 3 and isinstance(env.safety, SafetyConfig)
        assert env.task.describe() == task.describe()
        obs = env.reset(seed=0)
        assert np.shape(obs) == (task.obs_dim,) and np.all(np.isfinite(obs))
        np.testing.assert_array_equal(env.reset(seed=0), obs)  # a seed reproduces the start
        for step in range(1, 4):
            result = env.step(task.safe_action())
            assert isinstance(result, tuple) and len(result) == 6
            obs, reward, cost, terminated, truncated, info = result
            assert np.shape(obs) == (task.obs_dim,) and np.all(np.isfinite(obs))
            assert isinstance(reward, float) and math.isfinite(reward)
            assert isinstance(cost, float) and cost in (0.0, 1.0)
            assert isinstance(terminated, bool) and isinstance(truncated, bool)
            assert isinstance(info, dict) and isinstance(info["speed"], float) and math.isfinite(info["speed"])
            assert terminated == bool(task.terminated(obs))  # the task's termination is the env's
            if terminated:
                break
            assert truncated == (step == 3)
    finally:
        getattr(env, "close", lambda: None)()


def test_simulator_has_the_env_protocol_attributes(task):
    if not task.has_simulator:
        pytest.skip(f"{task.name} has no simulator")
    env = task.make_env(SafetyConfig(), seed=0)
    try:
        for attribute in ("task", "episode_steps", "control_dt", "safety"):
            assert hasattr(env, attribute), f"{type(env).__name__} has no {attribute}"
        assert env.episode_steps >= 1 and env.control_dt > 0
    finally:
        getattr(env, "close", lambda: None)()


# ---------------------------------------------------------------- the registry refuses


class BadBounds(Task):
    """low > high."""

    name, obs_dim, act_dim = "bad_bounds", 2, 1

    def __init__(self):
        self.action_low, self.action_high = np.ones(1), -np.ones(1)


class BadBoundsShape(Task):
    name, obs_dim, act_dim = "bad_bounds_shape", 2, 2

    def __init__(self):
        self.action_low, self.action_high = -np.ones(3), np.ones(3)


class InfiniteBounds(Task):
    name, obs_dim, act_dim = "infinite_bounds", 2, 1

    def __init__(self):
        self.action_low, self.action_high = np.full(1, -np.inf), np.ones(1)


class UnsafeSafeAction(Task):
    name, obs_dim, act_dim = "unsafe_safe_action", 2, 1

    def __init__(self):
        self.action_low, self.action_high = np.ones(1), 2 * np.ones(1)  # zero lies outside

    def safe_action(self):
        return np.zeros(1)


class ZeroObsDim(Task):
    name, obs_dim, act_dim = "zero_obs_dim", 0, 1

    def __init__(self):
        self.action_low, self.action_high = -np.ones(1), np.ones(1)


class BadStateMessage(Task):
    name, obs_dim, act_dim, state_message = "bad_state_message", 2, 1, "pointcloud"

    def __init__(self):
        self.action_low, self.action_high = -np.ones(1), np.ones(1)


class GoodTask(Task):
    """Keeps the contract: the module path that finds the bad ones finds it."""

    name, obs_dim, act_dim = "good_task", 2, 1

    def __init__(self):
        self.action_low, self.action_high = -np.ones(1), np.ones(1)


NOT_A_TASK = 42
GOOD_INSTANCE = GoodTask()


def returns_no_task():
    return "rc_car"


def raises_in_constructor():
    raise RuntimeError("broken robot")


def here(attribute: str) -> str:
    """``module:attribute`` of something defined in this test module."""
    assert sys.modules[__name__].__dict__[attribute] is not None  # resolvable by importlib
    return f"{__name__}:{attribute}"


def test_module_attribute_finds_a_good_task():
    assert isinstance(make_task(here("GoodTask")), GoodTask)
    assert make_task(here("GOOD_INSTANCE")) is GOOD_INSTANCE


@pytest.mark.parametrize("attribute", ["BadBounds", "BadBoundsShape", "InfiniteBounds", "UnsafeSafeAction",
                                       "ZeroObsDim", "BadStateMessage", "NOT_A_TASK", "returns_no_task",
                                       "raises_in_constructor"])
def test_make_task_refuses_what_breaks_the_contract(attribute):
    with pytest.raises(TaskError):
        make_task(here(attribute))


@pytest.mark.parametrize("name", ["no_such_task", "", f"{__name__}:NoSuchAttribute", "no_such_module_xyz:Task",
                                  "gym:NoSuchEnv-v0"])
def test_make_task_refuses_unknown_names(name):
    with pytest.raises(TaskError):
        make_task(name)


def test_checked_task_refuses_a_non_task():
    with pytest.raises(TaskError):
        checked_task(SimpleNamespace(name="x", obs_dim=1, act_dim=1, action_low=[-1.0], action_high=[1.0]))

"""``workers.tick_policy.TickPolicy`` without ROS: the action a tick or a lock-step answer publishes,
always within the task's bounds, and the figures it keeps."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from loop_ros.core.tasks import make_task
from loop_ros.workers.plan_worker import Plan, StateSample
from loop_ros.workers.tick_policy import ACTOR, FAILED, HELD, LATE, NO_MODEL, PLAN, STALE, TickPolicy

TASK = make_task("point_mass")
TIMEOUT = 0.1


def policy() -> tuple[TickPolicy, list[str]]:
    warnings: list[str] = []
    return TickPolicy(TASK, 0.02, warnings.append, lambda: {"loader_busy": False}), warnings


def a_plan(seq: int, state: StateSample, action=(0.5, -0.5)) -> Plan:
    return Plan(seq, state, np.array(action), np.array([action, (0.1, 0.1), (0.2, 0.2)]), {}, 0.01, 0.0, state.received)


class Actor:
    version = 7

    def actor(self, obs, noise):
        return np.full((1, 2), 5.0)  # beyond the bounds: clipped


def test_each_source_gives_its_action_within_the_bounds_and_is_counted():
    tick, warnings = policy()
    model, state = Actor(), StateSample(np.zeros(4, np.float32), 0.0, 0)
    plan = a_plan(0, state)
    np.testing.assert_array_equal(tick.tick(0.01, state, False, plan, model, TIMEOUT), [0.5, -0.5])  # PLAN
    np.testing.assert_array_equal(tick.tick(0.03, state, False, plan, model, TIMEOUT), [0.1, 0.1])  # HELD, shifted
    fresh = StateSample(np.zeros(4, np.float32), 0.1, 1)
    np.testing.assert_array_equal(tick.tick(0.15, fresh, False, plan, model, TIMEOUT), [0.2, 0.2])  # LATE, shifted
    np.testing.assert_array_equal(tick.tick(0.17, fresh, False, plan, model, TIMEOUT), [1.0, 1.0])  # ACTOR, clipped
    np.testing.assert_array_equal(tick.tick(0.5, fresh, False, plan, model, TIMEOUT), TASK.safe_action())  # STALE
    counts = tick.summary()["ticks_by_source"]
    assert (counts[PLAN], counts[HELD], counts[LATE], counts[ACTOR], counts[STALE]) == (1, 1, 1, 1, 1)
    assert tick.summary()["deadline_misses"] == 2 and tick.unbounded_actions == 1
    assert [miss["published"] for miss in tick.misses] == [LATE, ACTOR]
    assert tick.misses[0]["loader_busy"] is False and any("deadline miss" in w for w in warnings)


def test_a_late_plan_never_used_starts_at_its_first_action():
    tick, _ = policy()
    model, fresh = Actor(), StateSample(np.zeros(4, np.float32), 0.3, 1)
    late = a_plan(0, StateSample(np.zeros(4, np.float32), 0.0, 0), action=(0.3, 0.4))
    np.testing.assert_array_equal(tick.tick(0.31, fresh, False, late, model, TIMEOUT), [0.3, 0.4])
    np.testing.assert_array_equal(tick.tick(0.33, fresh, False, late, model, TIMEOUT), [0.1, 0.1])
    assert tick.summary()["ticks_by_source"][LATE] == 2 and tick.summary()["deadline_misses"] == 2
    assert tick.swap_log[0]["version"] == 7


def test_a_non_finite_or_misshapen_action_becomes_the_safe_action():
    tick, _ = policy()
    for bad in ([np.nan, 0.0], [np.inf, 0.0], [0.0, 0.0, 0.0]):
        np.testing.assert_array_equal(tick.bounded(bad), TASK.safe_action())
    assert tick.unbounded_actions == 3


def test_a_lock_step_answer_is_the_plans_action_else_the_safe_action():
    tick, _ = policy()
    state = StateSample(np.zeros(4, np.float32), 0.0, 0)
    np.testing.assert_array_equal(tick.answer(0.0, None, None), TASK.safe_action())  # no model yet
    np.testing.assert_array_equal(tick.answer(0.1, a_plan(0, state, (3.0, 0.2)), Actor()), [1.0, 0.2])
    np.testing.assert_array_equal(tick.answer(0.2, None, SimpleNamespace(version=8)), TASK.safe_action())
    counts = tick.summary()["ticks_by_source"]
    assert (counts[NO_MODEL], counts[PLAN], counts[FAILED]) == (1, 1, 1) and tick.summary()["deadline_misses"] == 0

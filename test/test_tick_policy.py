"""``workers.tick_policy.TickPolicy`` without ROS: the action a tick or a lock-step answer publishes,
always within the task's bounds, and the figures it keeps."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np

from loop_ros.core.tasks import make_task
from loop_ros.workers.plan_worker import Plan, StateSample
from loop_ros.workers.tick_policy import (ACTOR, FAILED, HELD, LATE, MAX_COMPENSATION_STEPS, NO_MODEL, PLAN, STALE,
                                         TickPolicy)

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


def a_state(seq: int, received: float) -> StateSample:
    return StateSample(np.zeros(4, np.float32), received, seq)


def test_the_delay_of_recent_plans_sets_how_many_actions_are_in_flight_and_which():
    tick, _ = policy()
    model = Actor()
    assert tick.compensation_steps() == 1  # before any plan was used: one tick
    # Ticks at 0.01, 0.03, ...; state k arrives at 0.02 k, its plan starts at once and is first used
    # at the tick 0.02 k + 0.05: two ticks (0.02 k + 0.01 and + 0.03) come between.
    plans = [dataclasses.replace(a_plan(k, a_state(k, 0.02 * k), action=(0.1 * k, -0.1 * k)),
                                 finished=0.02 * k + 0.04, latency_s=0.04) for k in range(8)]
    for i in range(10):
        tick.tick(0.01 + 0.02 * i, a_state(i, 0.02 * i), False, plans[i - 2] if i >= 2 else None, model, TIMEOUT)
    assert tick.compensation_steps() == 2 and tick.summary()["compensation_steps"] == 2
    # A state that came before the last tick (0.19): that tick's action (plan 7's first), then the two
    # a plan takes, plan 7 held on.
    np.testing.assert_allclose(tick.actions_in_flight(0.185, plans[7]), [(0.7, -0.7), (0.1, 0.1), (0.2, 0.2)])
    # After it, with a plan no tick has used yet (an exploring one: its action is not its mean's first):
    # its action, then its mean's next.
    newest = Plan(8, a_state(8, 0.16), np.array((0.3, 0.4)), np.array([(0.9, 0.9), (0.1, 0.1), (0.2, 0.2)]),
                  {}, 0.01, 0.0, 0.19)
    np.testing.assert_allclose(tick.actions_in_flight(0.195, newest), [(0.3, 0.4), (0.1, 0.1)])
    # A state the busy worker comes to late: the ticks already published count too, at most 4 in all.
    np.testing.assert_allclose(tick.actions_in_flight(0.16, plans[7]), [(0.6, -0.6), (0.7, -0.7), (0.1, 0.1), (0.2, 0.2)])
    np.testing.assert_allclose(tick.actions_in_flight(0.12, plans[7]),
                               [(0.4, -0.4), (0.5, -0.5), (0.6, -0.6), (0.7, -0.7)])
    tick.count_error(0.21)  # a failed tick published the safe action
    np.testing.assert_allclose(tick.actions_in_flight(0.2, plans[7])[0], TASK.safe_action())


def test_the_compensation_is_bounded_and_follows_the_median_delay():
    tick, _ = policy()
    model = Actor()
    for k in range(5):  # five plans, each first used 10 ticks after it started (ten `starting` ticks before)
        start = 0.5 * k
        for i in range(10):
            tick.tick(start + 0.01 + 0.02 * i, a_state(k, start), False, None, model, 10.0)
        plan = dataclasses.replace(a_plan(k, a_state(k, start)), finished=start + 0.2, latency_s=0.2)
        tick.tick(start + 0.21, a_state(k, start), False, plan, model, 10.0)
    assert tick.compensation_steps() == MAX_COMPENSATION_STEPS
    for k in range(5, 11):  # six more, used at the first tick after they started: the median follows.
        start = 0.5 * k  # Each state waited a tick for the busy worker: the delay counts from the plan's start.
        tick.tick(start + 0.001, a_state(k, start), False, None, model, 10.0)
        plan = dataclasses.replace(a_plan(k, a_state(k, start)), finished=start + 0.007, latency_s=0.005)
        tick.tick(start + 0.01, a_state(k, start), False, plan, model, 10.0)
    assert tick.compensation_steps() == 0
    np.testing.assert_array_equal(tick.actions_in_flight(6.0, None), np.zeros((0, 2)))

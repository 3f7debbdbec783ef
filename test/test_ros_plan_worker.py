"""The planner node's control logic without ROS: ``tick_source`` and ``PlanWorker`` with a stand-in planner."""
from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from loop_ros.core.arc import PlanResult
from loop_ros.core.config import ArcConfig, SafetyConfig, TaskConfig
from loop_ros.core.runtime import ModelHolder
from loop_ros.core.tasks import make_task
from loop_ros.workers.plan_worker import Plan, PlanWorker, StateSample
from loop_ros.workers.tick_policy import (ACTOR, HELD, INVALID, LATE, NO_MODEL, NO_STATE, PLAN, STALE, STARTING,
                                          held_action, tick_source)

TIMEOUT = 0.1


def sample(seq, received=0.0, value=0.0):
    return StateSample(np.full(4, value, np.float32), received, seq)


def plan(seq, state):
    return Plan(seq, state, np.zeros(2), np.zeros((3, 2)), {}, 0.001, 0.0, state.received)


@pytest.mark.parametrize("now, state, invalid, latest_plan, last_used, used_ticks, has_model, expected", [
    (1.0, None, False, None, -1, 0, True, NO_STATE),
    (1.0, sample(0, 0.95), True, None, -1, 0, True, INVALID),           # invalid wins over a fresh valid one
    (1.0, sample(0, 0.85), False, plan(0, sample(0, 0.85)), -1, 0, True, STALE),  # 0.15 s > 0.1 s
    (1.0, sample(1, 0.98), False, plan(0, sample(0, 0.96)), -1, 0, True, PLAN),
    (1.0, sample(1, 0.98), False, plan(0, sample(0, 0.96)), 0, 1, True, HELD),    # already used, state still fresh
    (1.0, sample(1, 0.98), False, plan(0, sample(0, 0.89)), -1, 0, True, LATE),   # planned on a too old state
    (1.0, sample(1, 0.98), False, plan(0, sample(0, 0.89)), 0, 2, True, LATE),    # ... its last step (of 3) left
    (1.0, sample(1, 0.98), False, plan(0, sample(0, 0.89)), 0, 3, True, ACTOR),   # ... and used up
    (1.0, sample(1, 0.98), False, None, -1, 0, False, NO_MODEL),
    (1.0, sample(1, 0.98), False, None, -1, 0, True, STARTING),   # no plan yet: not a late one
])
def test_tick_source(now, state, invalid, latest_plan, last_used, used_ticks, has_model, expected):
    assert tick_source(now, state, invalid, latest_plan, last_used, used_ticks, TIMEOUT, has_model) == expected


def test_held_plan_executes_its_shifted_mean():
    held = Plan(0, sample(0), np.zeros(2), np.arange(6, dtype=np.float32).reshape(3, 2), {}, 0.001, 0.0, 0.0)
    np.testing.assert_array_equal(held_action(held, 1), [2, 3])  # one tick after its first action
    np.testing.assert_array_equal(held_action(held, 5), [4, 5])  # past the horizon: the last action


class FakeModel:
    def actor(self, state, noise):  # (B, S), (B, A) -> (B, A)
        return np.full((len(state), 2), 0.5, np.float32)


class Log:
    """What the stand-in planners were asked to do, shared by every planner they derive."""

    def __init__(self):
        self.planned, self.settings, self.built, self.resets = [], [], 0, 0
        self.gate = threading.Event()  # plan() waits for it
        self.gate.set()
        self.entered = threading.Event()  # set when plan() is called
        self.fail_next = False
        self.fail_model = False  # with_model raises
        self.nan_next = False
        self.explore: list[bool] = []


def stand_in_factory(log: Log):
    class StandInPlanner:
        """ArcPlanner's interface; action (A,) = the first two state values."""

        def __init__(self, model, task, arc, safety, controller="arc"):
            self.model, self.task, self.arc, self.safety, self.controller = model, task, arc, safety, controller

        def plan(self, state, rng, explore=False):
            log.entered.set()
            log.gate.wait(5.0)
            log.explore.append(explore)
            if log.fail_next:
                log.fail_next = False
                raise RuntimeError("boom")
            if log.nan_next:
                log.nan_next = False
                mean = np.full((self.arc.horizon, 2), np.nan, np.float32)
                return PlanResult(np.zeros(2, np.float32), mean, {})
            log.planned.append(float(state[0]))
            log.settings.append((self.arc, self.safety, self.controller))
            return PlanResult(state[:2].copy(), np.zeros((self.arc.horizon, 2), np.float32), {"n_feasible": 7})

        def with_settings(self, arc=None, safety=None):
            return StandInPlanner(self.model, self.task, arc or self.arc, safety or self.safety, self.controller)

        def with_model(self, model):
            if log.fail_model:
                raise RuntimeError("cannot plan with this model")
            return StandInPlanner(model, self.task, self.arc, self.safety, self.controller)

        def reset(self):
            log.resets += 1

        def predict_states(self, state, actions):  # row i: the state plus i (plus the actions' sum: NaN stays NaN)
            steps = np.arange(len(actions) + 1, dtype=np.float32)[:, None]
            return state + steps + 0 * np.concatenate([[0], np.cumsum(np.asarray(actions)[:, 0])])[:, None]

    def make(*args):
        log.built += 1
        return StandInPlanner(*args)

    return make


def wait_until(predicate, timeout_s=5.0):
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.002)


@pytest.fixture
def make_worker():
    """Factory: a started worker over a holder with ``model``; returns (worker, log, configs, errors)."""
    started = []

    def make(model=FakeModel(), in_flight=None):
        log = Log()
        configs = {"arc": ArcConfig(horizon=3), "safety": SafetyConfig(), "task": TaskConfig(name="point_mass")}
        errors = []
        w = PlanWorker(make_task("point_mass"), ModelHolder(model), configs, make_planner=stand_in_factory(log),
                       on_error=errors.append, in_flight=in_flight)
        w.start()
        started.append((w, log))
        return w, log, configs, errors

    yield make
    for w, log in started:
        log.gate.set()
        w.stop()


@pytest.fixture
def worker(make_worker):
    return make_worker()


def offer(w, seq, value):
    w.offer_state(StateSample(np.full(4, value, np.float32), time.monotonic(), seq))


@pytest.mark.parametrize("compensate, in_flight, value, planned_on",
                         [(True, 2, 0.5, 3.0), (True, 0, 0.5, 1.0), (False, 2, 0.5, 1.0), (True, 2, np.nan, 1.0)])
def test_plans_from_the_state_predicted_through_the_actions_in_flight(make_worker, compensate, in_flight, value,
                                                                      planned_on):
    asked = []

    def actions_in_flight(sample, plan):
        asked.append((sample.seq, plan))
        return np.full((in_flight, 2), value, np.float32)

    w, log, configs, _ = make_worker(in_flight=actions_in_flight)
    w.offer_configs({**configs, "task": TaskConfig(name="point_mass", compensate_delay=compensate)})
    offer(w, 0, 1.0)
    wait_until(lambda: log.planned)
    assert log.planned == [planned_on]  # the stand-in's prediction adds 1 a step; a NaN one is not used
    assert asked == ([(0, None)] if compensate else [])
    assert w.stats.snapshot()["uncompensated"] == int(np.isnan(value))


def test_plans_on_the_newest_state_and_skips_the_ones_in_between(worker):
    w, log, _, _ = worker
    log.gate.clear()  # the first plan blocks until the gate opens
    offer(w, 0, 1.0)
    assert log.entered.wait(5.0)
    for seq, value in ((1, 2.0), (2, 3.0), (3, 4.0)):
        offer(w, seq, value)
    log.gate.set()
    wait_until(lambda: len(log.planned) == 2)
    assert log.planned == [1.0, 4.0]
    assert w.latest_plan.seq == 1 and w.latest_plan.state.seq == 3
    np.testing.assert_array_equal(w.latest_plan.action, [4.0, 4.0])
    assert w.latest_plan.actor_divergence == pytest.approx(np.hypot(3.5, 3.5))  # |(4, 4) - (0.5, 0.5)|
    assert w.stats.snapshot()["plans"] == 2 and w.stats.snapshot()["n_feasible"] == 7


def test_settings_reach_the_next_plan_and_a_new_controller_rebuilds(worker):
    w, log, configs, _ = worker
    offer(w, 0, 1.0)
    wait_until(lambda: len(log.planned) == 1)
    live = dict(configs, arc=dataclasses.replace(configs["arc"], eta=0.3, horizon=5),
                safety=dataclasses.replace(configs["safety"], keep_in_radius=0.5))
    w.offer_configs(live)
    offer(w, 1, 2.0)
    wait_until(lambda: len(log.planned) == 2)
    assert log.settings[-1] == (live["arc"], live["safety"], "arc") and log.built == 1
    assert w.latest_plan.mean_actions.shape == (5, 2)
    w.offer_configs(dict(live, task=dataclasses.replace(live["task"], controller="mppi")))
    offer(w, 2, 3.0)
    wait_until(lambda: len(log.planned) == 3)
    assert log.settings[-1][2] == "mppi" and log.built == 2


def test_waits_for_a_model_and_skips_stale_states(make_worker):
    w, log, _, _ = make_worker(model=None)  # as before the first bundle arrives
    offer(w, 0, 1.0)
    time.sleep(0.05)
    assert log.planned == [] and w.planner is None
    w.holder.swap(FakeModel())
    w.wake()
    offer(w, 1, 2.0)
    wait_until(lambda: log.planned == [2.0])
    w.offer_state(StateSample(np.zeros(4, np.float32), time.monotonic() - 1.0, 2))  # 1 s old
    wait_until(lambda: w.stats.snapshot()["skipped_stale"] == 1)
    assert log.planned == [2.0]


def test_a_failing_plan_is_counted_and_the_worker_goes_on(worker):
    w, log, _, errors = worker
    log.fail_next = True
    offer(w, 0, 1.0)
    wait_until(lambda: w.stats.snapshot()["plan_errors"] == 1)
    assert "boom" in errors[0] and w.latest_plan is None
    offer(w, 1, 2.0)
    wait_until(lambda: log.planned == [2.0])


def test_a_model_the_planner_cannot_take_fails_once_and_the_old_one_plans_on(worker):
    w, log, _, errors = worker
    offer(w, 0, 1.0)
    wait_until(lambda: log.planned == [1.0])
    log.fail_model = True
    w.holder.swap(FakeModel())
    w.wake()
    wait_until(lambda: w.stats.snapshot()["plan_errors"] == 1)
    time.sleep(0.2)
    assert w.stats.snapshot()["plan_errors"] == 1, errors  # not retried in a loop
    offer(w, 1, 2.0)
    wait_until(lambda: log.planned == [1.0, 2.0])


def test_a_non_finite_plan_is_not_used_and_resets_the_warm_start(worker):
    """A plan whose mean is not finite (a bad model output) would poison every later plan as
    the next warm start: it is counted as an error, never published, and the planner is reset."""
    w, log, _, errors = worker
    log.nan_next = True
    offer(w, 0, 1.0)
    wait_until(lambda: w.stats.snapshot()["plan_errors"] == 1)
    assert w.latest_plan is None and log.resets == 1 and "non-finite" in errors[0]
    offer(w, 1, 2.0)
    wait_until(lambda: log.planned == [2.0])


@pytest.mark.parametrize("explore", [False, True])
def test_the_explore_setting_reaches_the_planner(make_worker, explore):
    w, log, configs, _ = make_worker()
    w.offer_configs({**configs, "task": TaskConfig(name="point_mass", explore=explore)})
    offer(w, 0, 1.0)
    wait_until(lambda: len(log.planned) == 1)
    assert log.explore == [explore]


def test_reset_forgets_the_warm_start_before_the_next_plan(worker):
    w, log, _, _ = worker
    offer(w, 0, 1.0)
    wait_until(lambda: len(log.planned) == 1)
    w.request_reset()
    offer(w, 1, 2.0)
    wait_until(lambda: len(log.planned) == 2)
    assert log.resets == 1

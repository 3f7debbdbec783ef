"""What each planner tick publishes, and the record of it (DESIGN.md section 5), without ROS.

``tick_source`` decides, from what is there at the tick, where the tick's action comes from;
``TickPolicy`` turns that into the action (always within the task's bounds: a bad model's output
never reaches the robot) and keeps the figures of the run: ticks by source, deadline misses and
their circumstances, runs of stale states, model swaps and the misses right after them, tick
periods. It also measures how many ticks a plan's action comes after its state, and tells the plan
worker which actions will drive the robot meanwhile (``actions_in_flight``: delay compensation).
In lock-step there is no tick: ``answer`` gives the action that answers one state.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any, Callable

import numpy as np

from loop_ros.workers.plan_worker import plan_time_breakdown

# What a tick published, by reason (DESIGN.md section 5)
PLAN = "plan"            # first action of a plan finished since the last tick
HELD = "held"            # no new plan yet: the latest plan's action for this tick (its state is still fresh)
LATE = "late"            # deadline miss: the latest plan goes on (its shifted mean) while it has steps left
ACTOR = "actor"          # deadline miss, the latest plan used up: the actor's action on the latest state
STARTING = "starting"    # no plan made yet (first state, model just loaded): the actor's action, not a miss
NO_MODEL = "no_model"    # no plan and no model to ask: safe action
STALE = "stale"          # latest valid state older than task.state_timeout_s: safe action
INVALID = "invalid"      # latest state message was invalid (NaN, wrong size): safe action
NO_STATE = "no_state"    # nothing received yet: safe action
FAILED = "failed"        # lock-step only: the plan on this state failed: safe action
TICK_SOURCES = (PLAN, HELD, LATE, ACTOR, STARTING, NO_MODEL, STALE, INVALID, NO_STATE, FAILED)
SWAP_TICKS = 3
"""A deadline miss within this many ticks after a model replaced another counts as the swap's."""
MISSES_KEPT = 50
"""Deadline misses (and runs of stale ticks) whose circumstances the summary lists (the first ones)."""
DELAY_WINDOW = 25
"""Delay compensation counts on the median start-to-use delay of this many recent plans (one slow plan does not move it)."""
MAX_COMPENSATION_STEPS = 4
"""Delay compensation predicts at most this many control steps ahead."""
PUBLISHED_KEPT = 64
"""Recent ticks' actions kept for ``actions_in_flight`` (more than the ticks a fresh state can wait for its plan)."""


def tick_source(now: float, state, state_invalid: bool, plan, last_plan_seq: int, plan_ticks: int,
                timeout_s: float, has_model: bool) -> str:
    """Which action a tick at ``now`` publishes (one of ``TICK_SOURCES``); ``plan_ticks``: the ticks
    the plan numbered ``last_plan_seq`` has been in use."""
    if state_invalid:
        return INVALID
    if state is None:
        return NO_STATE
    if now - state.received > timeout_s:
        return STALE
    if plan is not None and now - plan.state.received <= timeout_s:
        # DESIGN 5: an action from a plan started on a state no older than the timeout. A plan that
        # finishes just after a tick (phase jitter between the sim's and the planner's clocks) is
        # held one tick: the tick executes its shifted mean, as the warm start would.
        return PLAN if plan.seq > last_plan_seq else HELD
    if not has_model:
        return NO_MODEL
    if plan is None:
        return STARTING
    # A late plan (made on a state older than the timeout) goes on while it has steps left: it was
    # planned with the task's constraints, the actor was not, and a stretch of late plans on a loaded
    # CPU must not hand the robot to the actor (with safety on, the car left a tightened circle).
    unused = plan.seq > last_plan_seq or plan_ticks < len(plan.mean_actions)
    return LATE if unused else ACTOR


def plan_started(plan) -> float:
    """When ``plan`` began (``time.monotonic()``)."""
    return plan.finished - plan.latency_s


def held_action(plan, ticks_since_published: int) -> np.ndarray:
    """The action of the held plan for this tick: its mean shifted by the ticks it has been in use."""
    return plan.mean_actions[min(ticks_since_published, len(plan.mean_actions) - 1)]


class TickPolicy:
    """The action of each tick (or lock-step answer) for ``task``, and the figures of the run.

    ``warn`` logs a line (rate-limited by the caller); ``miss_context`` gives what was going on at
    a deadline miss besides the plan (e.g. the plan in progress, a model being loaded).
    """

    def __init__(self, task, nominal_period_s: float, warn: Callable[[str], None],
                 miss_context: Callable[[], dict[str, Any]] = dict):
        self.low = np.asarray(task.action_low, dtype=float)
        self.high = np.asarray(task.action_high, dtype=float)
        self.safe_action = np.clip(np.asarray(task.safe_action(), dtype=float), self.low, self.high)
        self.act_dim = task.act_dim
        self._nominal_period_s, self._warn, self._miss_context = nominal_period_s, warn, miss_context
        # Every key up front: in lock-step the plan worker's thread counts while the executor reads.
        self.counts: Counter[str] = Counter({source: 0 for source in (*TICK_SOURCES, "tick_error")})
        self.unbounded_actions = 0  # actions that had to be clipped into the bounds or replaced (non-finite)
        self._last_plan_seq = -1
        self._plan_ticks = 0  # ticks the latest plan has been in use
        self._first_tick = self._last_tick = 0.0
        self._tick_periods: deque[float] = deque(maxlen=10_000)  # for the jitter figures
        self.swap_misses = 0
        self.swap_log: list[dict] = []  # when each model began to be used (wall time), and its version
        self.misses: list[dict] = []  # circumstances of the first MISSES_KEPT deadline misses
        self.stale_periods: list[dict] = []  # the first MISSES_KEPT runs of stale ticks
        self._stale_period: dict | None = None  # the run going on, when one is
        self._tick_model = None  # the model the last tick saw
        self._ticks_since_swap = SWAP_TICKS
        # The plan worker's thread reads these and the held plan's place (actions_in_flight) while the ticks write them.
        self._lock = threading.Lock()
        self._published: deque[tuple[float, np.ndarray]] = deque(maxlen=PUBLISHED_KEPT)  # (time, action) of recent ticks
        self._plan_delays: deque[int] = deque(maxlen=DELAY_WINDOW)  # ticks between a plan's start and its first use

    def tick(self, now: float, state, state_invalid: bool, plan, model, timeout_s: float) -> np.ndarray:
        """The action of the tick at ``now`` (``tick_source``), counted and within the bounds."""
        source = tick_source(now, state, state_invalid, plan, self._last_plan_seq, self._plan_ticks, timeout_s,
                             model is not None)
        missed = source in (LATE, ACTOR)
        action = self.safe_action
        if source in (ACTOR, STARTING):  # outside the lock: the plan worker need not wait for the actor
            action = model.actor(state.obs[None], np.zeros((1, self.act_dim), np.float32))[0]
        with self._lock:
            if source in (PLAN, LATE) and plan.seq > self._last_plan_seq:
                self._plan_delays.append(self._ticks_after(plan_started(plan)))
                action, self._last_plan_seq, self._plan_ticks = plan.action, plan.seq, 1
            elif source in (HELD, LATE):
                action = held_action(plan, self._plan_ticks)
                self._plan_ticks += 1
            action = self.bounded(action)
            self._published.append((now, action))
        if missed:
            self._record_miss(now, plan, source)
        self._track_stale(now, state, timeout_s, source == STALE)
        self._count(source, model, now, missed)
        if self._last_tick:
            self._tick_periods.append(now - self._last_tick)
        self._first_tick = self._first_tick or now
        self._last_tick = now
        return action

    def answer(self, now: float, plan, model) -> np.ndarray:
        """Lock-step: the action answering a state, from the plan made on it, else the safe action
        (no model yet, a failed plan)."""
        source = PLAN if plan is not None else NO_MODEL if model is None else FAILED
        action = self.bounded(plan.action if plan is not None else self.safe_action)
        self._count(source, model, now, missed=False)
        self._first_tick = self._first_tick or now
        self._last_tick = now
        return action

    # ------------------------------------------------------------ delay compensation
    def actions_in_flight(self, received: float, plan) -> np.ndarray:
        """(c, A): the actions that drive the robot from a state received at ``received`` until a plan
        started on it now can act, so the plan can start from the state they lead to.

        A plan's first action drives the robot from the state c steps after its own, c the ticks
        between the state's arrival and the plan's first use: those already published (the worker
        may have been busy when the state came), and those a plan takes from its start, measured on
        recent plans (``compensation_steps``); at most ``MAX_COMPENSATION_STEPS`` in all. The actions
        are those of the ticks published since ``received``, then those the coming ticks will
        publish without a newer plan: ``plan`` (the latest) from its first action if no tick has
        used it yet, else held on.
        """
        with self._lock:
            actions = [action for t, action in self._published if t > received]
            steps = min(len(actions) + self.compensation_steps(), MAX_COMPENSATION_STEPS)
            actions = actions[:steps]
            fresh = plan is not None and plan.seq > self._last_plan_seq
            offset = 0 if fresh else self._plan_ticks
            while len(actions) < steps:
                if plan is None:
                    actions.append(self._published[-1][1] if self._published else self.safe_action)
                else:
                    actions.append(plan.action if fresh and offset == 0 else held_action(plan, offset))
                offset += 1
        return np.clip(np.asarray(actions, np.float32).reshape(steps, self.act_dim), self.low, self.high)

    def compensation_steps(self) -> int:
        """Ticks published between a plan's start and its first use: the median of the last
        ``DELAY_WINDOW`` plans (at most ``MAX_COMPENSATION_STEPS``); one before any plan was used.
        The caller holds the lock."""
        if not self._plan_delays:
            return 1
        return min(sorted(self._plan_delays)[len(self._plan_delays) // 2], MAX_COMPENSATION_STEPS)

    def _ticks_after(self, since: float) -> int:
        """Ticks published after ``since`` (before the one being decided)."""
        return sum(t > since for t, _ in self._published)

    def bounded(self, action) -> np.ndarray:
        """``action`` clipped into the bounds; the safe action when it is not finite or misshapen."""
        action = np.asarray(action, dtype=float)
        if action.shape != self.low.shape or not np.all(np.isfinite(action)):
            self.unbounded_actions += 1
            return self.safe_action
        clipped = np.clip(action, self.low, self.high)
        self.unbounded_actions += bool(np.any(clipped != action))
        return clipped

    def count_error(self, now: float) -> None:
        """A tick at ``now`` that failed: the node published the safe action."""
        self.counts["tick_error"] += 1
        with self._lock:
            self._published.append((now, self.safe_action))

    # ------------------------------------------------------------ the record
    def _count(self, source: str, model, now: float, missed: bool) -> None:
        self.counts[source] += 1
        if model is not self._tick_model:
            self._ticks_since_swap = 0 if self._tick_model is not None else SWAP_TICKS
            self._tick_model = model
            if model is not None:
                self.swap_log.append({"wall_time": time.time(), "version": model.version})
        self.swap_misses += missed and self._ticks_since_swap < SWAP_TICKS
        self._ticks_since_swap += 1

    def _record_miss(self, now: float, plan, source: str) -> None:
        """Keep and log a deadline miss with what was going on, so its cause can be told from the log."""
        miss = {"published": source, "t_s": now - self._first_tick,
                "plan_state_age_ms": (now - plan.state.received) * 1e3, "plan_finished_ago_ms": (now - plan.finished) * 1e3, **plan_time_breakdown(plan, "plan_"),
                **self._miss_context(), "ticks_since_swap": self._ticks_since_swap}
        if len(self.misses) < MISSES_KEPT:
            self.misses.append(miss)
        self._warn("deadline miss: " +
                   ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in miss.items()))

    def _track_stale(self, now: float, state, timeout_s: float, stale: bool) -> None:
        """Log each run of stale ticks once, at its start, and keep when it began and how long it lasted."""
        if not stale:
            self._stale_period = None
        elif self._stale_period is not None:
            self._stale_period["ticks"] += 1
        else:
            age_ms = (now - state.received) * 1e3
            self._stale_period = {"t_s": now - (self._first_tick or now), "state_age_ms": age_ms, "ticks": 1}
            if len(self.stale_periods) < MISSES_KEPT:
                self.stale_periods.append(self._stale_period)
            self._warn(f"stale state: the latest is {age_ms:.0f} ms old (task.state_timeout_s {timeout_s * 1e3:.0f} "
                       "ms); publishing the safe action until a fresh one comes")

    def summary(self) -> dict[str, Any]:
        """The tick figures of the run (part of the planner's summary and diagnostics)."""
        ticks = sum(self.counts.values())
        span = self._last_tick - self._first_tick if ticks > 1 else 0.0
        periods = list(self._tick_periods)
        with self._lock:
            compensation_steps = self.compensation_steps()
        return {
            "ticks": ticks,
            "achieved_hz": (ticks - 1) / span if span > 0 else 0.0,
            "tick_period_p99_ms": _percentile_ms(periods, 99),
            "tick_period_max_ms": _percentile_ms(periods, 100),
            "tick_jitter_p99_ms": _percentile_ms(tick_jitter(periods, self._nominal_period_s), 99),
            "deadline_misses": self.counts[LATE] + self.counts[ACTOR],
            "swap_deadline_misses": self.swap_misses,
            "deadline_miss_details": list(self.misses),
            "stale_periods": list(self.stale_periods),
            "stale_states": self.counts[STALE],
            "invalid_state_ticks": self.counts[INVALID],
            "no_model_ticks": self.counts[NO_MODEL],
            "ticks_by_source": {source: self.counts[source] for source in TICK_SOURCES},
            "swap_log": list(self.swap_log),
            "unbounded_actions": self.unbounded_actions,
            "compensation_steps": compensation_steps,
        }


def tick_jitter(periods, nominal_s: float) -> np.ndarray:
    """How far each tick came from one nominal period after the one before it (seconds)."""
    return np.abs(np.asarray(periods, dtype=float) - nominal_s)


def _percentile_ms(seconds, q: float) -> float | None:
    values = np.array(seconds)
    return float(np.percentile(values, q) * 1e3) if values.size else None

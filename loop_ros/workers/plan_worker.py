"""The planner node's planning thread, without ROS.

DESIGN.md section 5: a timer publishes exactly one action per tick and never waits for
the planner. ``PlanWorker`` plans in its own thread on the newest valid state (older
ones are skipped) and leaves its result in ``latest_plan``; ``tick_policy`` decides, from
what is there at the tick, which action the tick publishes. Settings edits and model
swaps reach the planner only between two plans, inside the worker thread.

In lock-step (``task.lockstep``: simulated time waits for the planner) there is no tick: the
worker answers every state it takes through ``answer(sample, plan)``, with the plan made on
it, or None when none could be (no model yet, a failed plan): the node then sends the safe action.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from loop_ros.core.arc import ArcPlanner
from loop_ros.core.planning_model import actor_divergence
from loop_ros.workers.thread_loop import ThreadLoop

@dataclass(frozen=True)
class StateSample:
    obs: np.ndarray  # (S,) float32
    received: float  # time.monotonic() at arrival: hosts' clocks may differ, arrival times do not
    seq: int  # arrival counter
    key: int | None = None  # what the sim names the state by (lock-step answers echo it): step count or stamp


@dataclass(frozen=True)
class Plan:
    seq: int  # plan counter
    state: StateSample  # the state it was planned on
    action: np.ndarray  # (A,) to execute
    mean_actions: np.ndarray  # (H, A)
    metrics: dict
    latency_s: float
    actor_divergence: float  # |planned action - actor action| on the same state
    finished: float  # time.monotonic() when it was done
    cpu_s: float | None = None  # CPU time the planning thread got meanwhile (None: not on Linux)
    runnable_s: float | None = None  # time it was ready to run but waited for a core


def thread_times() -> tuple[float, float] | None:
    """(CPU time, time runnable but waiting for a core) of the calling thread so far, in
    seconds, from Linux's schedstat; None elsewhere. Tells a plan that computed for long from
    one whose thread waited for a core, and both from one that waited for a lock (the GIL)."""
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as f:
            cpu_ns, wait_ns = f.read().split()[:2]
        return int(cpu_ns) * 1e-9, int(wait_ns) * 1e-9
    except (OSError, ValueError):
        return None


def plan_time_breakdown(plan: Plan | None, prefix: str) -> dict[str, float | None]:
    """``{prefix}latency_ms``, ``{prefix}cpu_ms``, ``{prefix}runnable_ms`` of ``plan``."""
    values = (None, None, None) if plan is None else (plan.latency_s, plan.cpu_s, plan.runnable_s)
    return {prefix + name: None if v is None else v * 1e3 for name, v in zip(("latency_ms", "cpu_ms", "runnable_ms"), values)}


class PlanStats:
    """Counters and recent latencies of the worker, safe to read from other threads."""

    def __init__(self, window: int = 1000):
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=window)
        self._divergences: deque[float] = deque(maxlen=window)
        self.counts: Counter[str] = Counter()
        self.last_n_feasible: int | None = None
        self.slowest: Plan | None = None

    def record(self, plan: Plan) -> None:
        with self._lock:
            self._latencies.append(plan.latency_s)
            self._divergences.append(plan.actor_divergence)
            self.counts["plans"] += 1
            self.counts["all_infeasible"] += bool(plan.metrics.get("all_infeasible", False))
            if self.slowest is None or plan.latency_s > self.slowest.latency_s:
                self.slowest = plan
            self.last_n_feasible = plan.metrics.get("n_feasible")

    def count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def snapshot(self) -> dict[str, Any]:
        """plans, all_infeasible, plan_errors, skipped_stale, uncompensated (a non-finite delay
        prediction: planned on the measured state), n_feasible (last plan),
        plan latency median / p99 (ms) and mean actor divergence over the window, and the
        slowest plan of the run: its latency, and the CPU time and core wait of its thread (ms)."""
        with self._lock:
            latencies = np.array(self._latencies)
            divergences = np.array(self._divergences)
            counters = ("plans", "all_infeasible", "plan_errors", "skipped_stale", "uncompensated")
            snap: dict[str, Any] = {name: self.counts[name] for name in counters}
            snap["n_feasible"] = self.last_n_feasible
            snap.update(plan_time_breakdown(self.slowest, "slowest_plan_"))
        snap["plan_latency_median_ms"] = float(np.median(latencies) * 1e3) if latencies.size else None
        snap["plan_latency_p99_ms"] = float(np.percentile(latencies, 99) * 1e3) if latencies.size else None
        snap["actor_divergence"] = float(divergences.mean()) if divergences.size else None
        return snap


class PlanWorker(ThreadLoop):
    """Plans in a thread on the newest valid state with the settings and model in effect.

    ``configs`` is the ``{section: dataclass}`` mapping of the planner node (arc, safety,
    task, ...). ``holder.current`` is the model (None: nothing to plan with). ``make_planner``
    builds a planner (``ArcPlanner``'s signature); a planner must offer plan / reset /
    with_settings / with_model / predict_states like ``ArcPlanner``.
    """

    def __init__(self, task, holder, configs: dict, make_planner: Callable = ArcPlanner,
                 on_error: Callable[[str], None] = lambda message: None,
                 predict_interval_s: float = 0.1,
                 answer: Callable[[StateSample, Plan | None], None] | None = None,
                 in_flight: Callable[[StateSample, Plan | None], np.ndarray] | None = None,
                 on_thread_start: Callable[[], None] = lambda: None):
        super().__init__("plan-worker", poll_s=0.1)
        self._on_thread_start = on_thread_start  # runs first in the worker thread (e.g. its real-time priority)
        self.task, self.holder = task, holder
        self._make_planner, self._on_error, self._answer = make_planner, on_error, answer
        self._in_flight = in_flight  # (sample, latest plan) -> (c, A) actions that act before this plan can
        self._predict_interval_s = predict_interval_s
        self._state: StateSample | None = None
        self._planned_seq = -1
        self._pending_configs: dict | None = configs
        self._reset_requested = False
        self._model = None
        self._rng = np.random.default_rng(configs["task"].seed)
        self._last_predict = -np.inf
        self.configs: dict = configs
        self.configs_applied_at = 0.0  # time.monotonic() when the worker last applied new settings
        self.planner = None
        self.latest_plan: Plan | None = None
        self.latest_mean_states: np.ndarray | None = None  # (H+1, S), refreshed every predict_interval_s
        self.planning_since: float | None = None  # time.monotonic() when the plan in progress began
        self.stats = PlanStats()

    # ------------------------------------------------------------ called from other threads
    def offer_state(self, sample: StateSample) -> None:
        with self._cond:
            self._state = sample
            self._cond.notify()

    def offer_configs(self, configs: dict) -> None:
        with self._cond:
            self._pending_configs = configs
            self._cond.notify()

    def request_reset(self) -> None:
        """Forget the warm start before the next plan (a new episode began)."""
        with self._cond:
            self._reset_requested = True
            self._cond.notify()

    # ------------------------------------------------------------ the worker thread
    def _on_start(self) -> None:
        self._on_thread_start()

    def _has_work(self) -> bool:
        # A swapped model (``wake``) counts as work too: the planner is rebuilt on it.
        new_state = self._state is not None and self._state.seq > self._planned_seq
        return (new_state or self._pending_configs is not None or self._reset_requested
                or self.holder.current is not self._model)

    def _take(self):
        sample = self._state if self._state is not None and self._state.seq > self._planned_seq else None
        configs, self._pending_configs = self._pending_configs, None
        reset, self._reset_requested = self._reset_requested, False
        return sample, configs, reset

    def _work(self, work) -> None:
        sample, configs, reset = work
        plan = None
        try:
            self._update_planner(configs, reset)
            if sample is not None:
                self._planned_seq = sample.seq
                plan = self._plan(sample)
        except Exception as error:  # noqa: BLE001 - a failing plan must not kill the thread: ticks fall back
            self._failed(error)
        if sample is not None and self._answer is not None:
            self._answer(sample, plan)

    def _failed(self, error: Exception) -> None:
        self.stats.count("plan_errors")
        self._on_error(f"planning failed: {error!r}")

    def _update_planner(self, configs: dict | None, reset: bool) -> None:
        model = self.holder.current
        if configs is not None:
            if configs["task"].seed != self.configs["task"].seed:
                self._rng = np.random.default_rng(configs["task"].seed)
            self.configs = configs
            self.configs_applied_at = time.monotonic()
        if configs is not None or model is not self._model:
            # Taken as tried first: a model the planner cannot be built on fails once, not in a loop
            # (a loop that holds a core, at real-time priority); the old planner plans on.
            self._model = model
            self.planner = self._planner_for(model)
        if reset and self.planner is not None:
            self.planner.reset()

    def _planner_for(self, model):
        """The planner for ``model`` and the current settings; keeps the warm start when it can."""
        if model is None:
            return None
        arc, safety, controller = self.configs["arc"], self.configs["safety"], self.configs["task"].controller
        planner = self.planner
        if planner is None or planner.controller != controller:
            return self._make_planner(model, self.task, arc, safety, controller)
        if planner.model is not model:
            planner = planner.with_model(model)
        return planner.with_settings(arc=arc, safety=safety)

    def _delay_compensated(self, planner, sample: StateSample) -> np.ndarray:
        """The state this plan's first action will drive the robot from: ``sample``'s, predicted
        through the actions in flight until then (``in_flight``; the tick policy measures how many)."""
        task = self.configs["task"]
        if not task.compensate_delay or task.lockstep or self._in_flight is None:  # lock-step: this very state
            return sample.obs
        actions = self._in_flight(sample, self.latest_plan)
        if len(actions) == 0:
            return sample.obs
        predicted = planner.predict_states(sample.obs, actions)[len(actions)].astype(np.float32)
        if not np.all(np.isfinite(predicted)):  # a poor model's prediction: plan on the measured state
            self.stats.count("uncompensated")
            return sample.obs
        return predicted

    def _plan(self, sample: StateSample) -> Plan | None:
        """The plan on ``sample`` (None: no model, or a state the tick would not use any more)."""
        planner, task = self.planner, self.configs["task"]
        if planner is None:
            return None
        if not task.lockstep and time.monotonic() - sample.received > task.state_timeout_s:
            self.stats.count("skipped_stale")  # the tick will not use it anyway
            return None
        self.planning_since = time.monotonic()
        start, times_before = time.perf_counter(), thread_times()
        try:
            result = planner.plan(self._delay_compensated(planner, sample), self._rng,
                                  explore=self.configs["task"].explore)
        finally:
            self.planning_since = None
        latency, times_after = time.perf_counter() - start, thread_times()
        cpu_s, runnable_s = (None, None) if times_before is None else np.subtract(times_after, times_before).tolist()
        action = np.asarray(result.action, dtype=np.float64)
        if action.shape != (self.task.act_dim,) or not np.all(np.isfinite(action)) \
                or not np.all(np.isfinite(result.mean_actions)):
            planner.reset()  # heal: the next plan starts from the prior, not from this one
            raise ValueError(f"planner returned a non-finite or misshapen plan (action {action})")
        seq = self.latest_plan.seq + 1 if self.latest_plan is not None else 0
        plan = Plan(seq, sample, action, result.mean_actions, dict(result.metrics), latency,
                    actor_divergence(planner.model, sample.obs, action), time.monotonic(), cpu_s, runnable_s)
        self.latest_plan = plan
        self.stats.record(plan)
        if start - self._last_predict >= self._predict_interval_s:  # the plan view is for people: 10 Hz is plenty
            self._last_predict = start
            self.latest_mean_states = planner.predict_states(sample.obs, result.mean_actions)
        return plan

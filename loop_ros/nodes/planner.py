"""Planner node: ``state`` in, exactly one ``action`` per tick out (DESIGN.md sections 4 and 5).

Topics: subscribes ``state`` (nav_msgs/Odometry for ``ODOMETRY`` tasks, else
std_msgs/Float64MultiArray of the observation and the task's extras, ``core.array_state``), ``episode`` (a new episode resets the warm
start) and ``model`` (bundle bytes); publishes ``action`` (Float64MultiArray), ``plan``
(nav_msgs/Path of the planned mean positions) and ``/diagnostics``. Parameters: every field
of the arc, safety, runtime and task sections (the task's params file), validated before
they apply; ``task.name``, ``task.control_rate_hz`` and ``task.realtime_priority`` are fixed at start.

Run: ``python -m loop_ros.nodes.planner [--summary FILE] --ros-args --params-file config/rc_car.yaml``
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Odometry, Path
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray

from loop_ros.core.arc import fused_graph_key
from loop_ros.core.runtime import ModelHolder
from loop_ros.core.tasks import make_task
from loop_ros.core.odometry import pose_from_odometry
from loop_ros.core.tasks.base import ARRAY
from loop_ros.core.untrusted import checked_episode
from loop_ros.nodes import StartGate, run_node
from loop_ros.nodes.managed_node import ManagedNode
from loop_ros.nodes.messages import (answer, diagnostics, float_array, observation_of_array, path_from_positions,
                                     state_key)
from loop_ros.nodes.node_log import log_at
from loop_ros.nodes.params import ParameterBinding
from loop_ros.settings import bundle_path
from loop_ros.workers.model_loader import ModelLoader, trusted_public_keys
from loop_ros.workers.plan_worker import PlanWorker, StateSample
from loop_ros.workers.priority import PERIODIC_ABOVE, RealtimeThreads
from loop_ros.workers.tick_policy import TickPolicy

SECTIONS = ("arc", "safety", "runtime", "task", "security")
FIXED = ("task.name", "task.control_rate_hz", "task.realtime_priority", "security.signing_key", "security.trusted_keys")
DIAGNOSTICS_PERIOD_S = 1.0
PATH_PERIOD_S = 0.1
LATEST_ONLY = QoSProfile(depth=1)
MODEL_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def status_name(node_name: str) -> str:
    """Name of the node's DiagnosticStatus, e.g. ``/planner: planning``."""
    return f"{node_name}: planning"


def state_reader(task):
    """(message type, msg -> obs (S,) or None) for the task's ``state`` topic."""
    if task.state_message == ARRAY:
        return Float64MultiArray, lambda msg: observation_of_array(msg, task)

    def from_odometry(msg):
        pose = pose_from_odometry(msg)
        return None if pose is None else task.obs_from_pose(*pose)

    return Odometry, from_odometry


class PlannerNode(ManagedNode):
    """ARC / safeARC planning in a worker thread behind a fixed-rate action timer, as a lifecycle
    node: configure starts loading the model (off the control path) and the plan worker; activate starts
    the tick (the only thing that publishes actions); deactivate publishes the safe action once
    and stops it, so an inactive planner never sends an action or a plan."""

    def __init__(self, node_name: str = "planner"):
        super().__init__(node_name)
        self.params = ParameterBinding(self, SECTIONS, self._on_settings, read_only=FIXED)
        self._tick_timer = None

    def configure_node(self) -> None:
        configs = self.params.configs
        self.task = make_task(configs["task"].name)
        self.holder = ModelHolder()
        self.lockstep = configs["task"].lockstep
        self.realtime = RealtimeThreads(configs["task"].realtime_priority, self._log)
        self.worker = PlanWorker(self.task, self.holder, configs, on_error=self._log_error,
                                 answer=self._answer if self.lockstep else None,
                                 in_flight=lambda sample, plan: self.policy.actions_in_flight(sample.received, plan),
                                 on_thread_start=self.realtime.enter)
        self.loader = ModelLoader(self.holder, self.task.describe(), self.worker.wake, self._log,
                                  fused_key=self._fused_key)
        self.policy = TickPolicy(self.task, 1.0 / configs["task"].control_rate_hz,
                                 lambda text: log_at(self.get_logger(), "warn", text), self._miss_context)
        self.invalid_states = 0
        self.rejected_inputs: Counter[str] = Counter()  # messages refused at the trust boundary, by topic
        self._plan_errors_reported = 0
        self._state: StateSample | None = None
        self._state_invalid = False
        self._edit_accepted_at: float | None = None
        self._published_states = None
        self._make_interfaces(state_reader(self.task))
        self._bundle_source = None
        self.worker.start()
        try:
            self._load_bundle(configs)
        except BaseException:
            self.close()
            raise

    def activate_node(self) -> None:
        self.worker.request_reset()  # a plan warm-started before the pause is stale
        if self._state is not None:  # a state that came while inactive is planned on now (lock-step: answered);
            # a new arrival number, so it is not taken for the one a plan was dropped for at deactivation
            self._state = dataclasses.replace(self._state, seq=self._state.seq + 1)
            self.worker.offer_state(self._state)
        if not self.lockstep:  # lock-step: the plan worker answers each state (_answer), no tick
            self._tick_timer = self.create_timer(1.0 / self.params.configs["task"].control_rate_hz, self._on_tick)

    def deactivate_node(self) -> None:
        if self._tick_timer is not None:
            self.destroy_timer(self._tick_timer)
            self._tick_timer = None
        self.action_pub.publish(float_array(self.policy.safe_action))  # the robot brakes while we are away

    def _make_interfaces(self, reader) -> None:
        # One executor thread runs these (see nodes.run_node); each callback is short, and
        # rclpy's executor serves ready timers before subscriptions, so the tick is never starved.
        state_type, self._obs_from_msg = reader
        self.action_pub = self.create_lifecycle_publisher(Float64MultiArray, "action", 10)
        self.start_gate = StartGate(self.action_pub, self.get_logger().warning)
        self.plan_pub = self.create_lifecycle_publisher(Path, "plan", 1)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(state_type, "state", self._on_state, LATEST_ONLY)
        self.create_subscription(String, "episode", self._on_episode, 10)
        self.create_subscription(UInt8MultiArray, "model", self._on_model, MODEL_QOS)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self.create_timer(PATH_PERIOD_S, self._publish_path)

    # ------------------------------------------------------------ control path
    def _on_tick(self) -> None:
        """Exactly one action per tick (DESIGN 5): should the tick itself fail, the safe action."""
        now = time.monotonic()
        try:
            self.realtime.enter(PERIODIC_ABOVE)  # the tick's thread (the executor's) once, above the planning thread
            self._tick(now)
        except Exception as error:  # noqa: BLE001 - counted like any callback error, and the robot brakes
            self.count_callback_error("tick", error)
            self.action_pub.publish(float_array(self.policy.safe_action))
            self.policy.count_error(now)

    def _tick(self, now: float) -> None:
        # The first tick waits for the first state, and for the model being loaded at start:
        # ticks before them could only brake.
        gate = self.start_gate
        if not gate.open and not gate.passes(self.params.configs["task"].start_subscribers, self._missing_input()):
            return
        action = self.policy.tick(now, self._state, self._state_invalid, self.worker.latest_plan,
                                  self.holder.current, self.params.configs["task"].state_timeout_s)
        self.action_pub.publish(float_array(action))

    def _answer(self, sample: StateSample, plan) -> None:
        """Lock-step, in the plan worker's thread: the one action that answers ``sample`` (the sim
        waits for it), from the plan made on it, else the safe action (no model yet, a failed plan)."""
        if not self.active:  # inactive: no answer goes out; the sim waits
            return
        try:
            action = self.policy.answer(time.monotonic(), plan, self.holder.current)
            self.action_pub.publish(answer(action, sample.key))
        except Exception as error:  # noqa: BLE001 - the worker thread must go on answering
            self.count_callback_error("lockstep answer", error)

    def _miss_context(self) -> dict:
        """What was going on at a deadline miss besides the plan: the plan in progress, a model loading."""
        planning_since = self.worker.planning_since
        return {"planning_for_ms": None if planning_since is None else (time.monotonic() - planning_since) * 1e3,
                "loader_busy": self.loader.busy}

    def _on_state(self, msg) -> None:
        obs = self._obs_from_msg(msg)
        # Checked again as the float32 the networks see: a finite float64 may not be one.
        obs = None if obs is None else np.asarray(obs, dtype=np.float32)
        if obs is None or obs.shape != (self.task.obs_dim,) or not np.all(np.isfinite(obs)):
            self._state_invalid = True
            self.invalid_states += 1
            self.rejected_inputs["state"] += 1
            self.get_logger().warning("invalid state (not finite, too large, wrong size or no unit quaternion) "
                                      "ignored; publishing the safe action", throttle_duration_sec=1.0)
            return
        seq = self._state.seq + 1 if self._state is not None else 0
        self._state = StateSample(obs, time.monotonic(), seq, state_key(msg, self.task) if self.lockstep else None)
        self._state_invalid = False
        if self.active:  # inactive: nothing to plan for
            self.worker.offer_state(self._state)

    # ------------------------------------------------------------ settings and models
    def _on_settings(self, configs: dict) -> None:
        if not self.configured:  # configure reads the parameters as they are then
            return
        self._edit_accepted_at = time.monotonic()
        self.worker.offer_configs(configs)
        self._load_bundle(configs)

    def _load_bundle(self, configs: dict) -> None:
        """At start: load the trusted keys (``security.trusted_keys``, fixed; a bad file is a
        ``ConfigError``) and the bundle directory. Then reload the directory only when
        ``task.bundle`` changed; a ``runtime.*`` edit rebuilds the sessions of the model in use,
        so an online-trained model is not rolled back to the directory's."""
        bundle, runtime = configs["task"].bundle, configs["runtime"]
        previous, self._bundle_source = self._bundle_source, (bundle, runtime)
        if previous is None:
            self.loader.trusted_keys = trusted_public_keys(configs["security"].trusted_keys)
            self._log("info" if self.loader.trusted_keys else "warn",
                      f"models from the model topic are accepted signed by key(s) {sorted(self.loader.trusted_keys)}"
                      if self.loader.trusted_keys else
                      "security.trusted_keys is empty: every model from the model topic will be refused")
        if previous is None or bundle != previous[0]:
            directory = bundle_path(self.task, {"task.bundle": bundle})
            if directory is not None:
                self.loader.load_directory(directory, runtime)
        elif runtime != previous[1]:
            self.loader.rebuild(runtime)

    def _missing_input(self) -> str | None:
        if self._state is None and not self._state_invalid:
            return "state"
        if self.holder.current is None and self.loader.pending:
            return "model"
        return None

    def _fused_key(self):
        """(horizon, terminal kind) of the fused graphs the plan worker's settings need."""
        configs = self.worker.configs
        return fused_graph_key(configs["arc"], configs["task"].controller)

    def _on_episode(self, msg: String) -> None:
        """A new episode began: the warm start is forgotten (only for a well-formed episode record)."""
        if checked_episode(msg.data) is None:
            self.rejected_inputs["episode"] += 1
            self.get_logger().warning("invalid episode record (not one JSON object) ignored", throttle_duration_sec=1.0)
            return
        self.worker.request_reset()

    def _on_model(self, msg: UInt8MultiArray) -> None:
        self.loader.load_bytes(bytes(msg.data), self.params.configs["runtime"])

    def _log(self, level: str, text: str) -> None:
        log_at(self.get_logger(), level, text)

    def _log_error(self, text: str) -> None:
        self.get_logger().error(text, throttle_duration_sec=2.0)

    # ------------------------------------------------------------ reporting
    def summary(self) -> dict:
        """Counters of the run so far (also the ``--summary`` file and the diagnostics values)."""
        summary = {
            **self.policy.summary(),
            "invalid_states": self.invalid_states,
            "model_version": self.holder.version,
            "model_swaps": self.holder.swaps,
            "bundle_errors": self.loader.errors,
            "bundle_rejections": dict(self.loader.rejections),
            "rejected_inputs": dict(self.rejected_inputs),
            "callback_errors": dict(self.callback_errors),
            "controller": self.params.configs["task"].controller,
            "realtime_threads": self.realtime.threads,
            "realtime_refused": self.realtime.refused,
        }
        summary.update(self.worker.stats.snapshot())
        return summary

    def _publish_diagnostics(self) -> None:
        values = self.summary()
        values.pop("ticks_by_source")
        values.pop("deadline_miss_details")
        values.pop("stale_periods")
        values.pop("swap_log")
        safety = self.worker.configs["safety"]
        values.update({"safety.enabled": safety.enabled, "safety.keep_in_radius": safety.keep_in_radius,
                       "safety.d0": safety.d0, "model_status": self.loader.status,
                       "bundle_last_error": self.loader.last_error})
        accepted, applied = self._edit_accepted_at, self.worker.configs_applied_at
        if accepted is not None:
            values["last_edit_applied_after_ms"] = (applied - accepted) * 1e3 if applied >= accepted else "pending"
        level, message = DiagnosticStatus.OK, "planning"
        plan_errors = values["plan_errors"]
        if plan_errors > self._plan_errors_reported or self.callback_errors:
            level, message = DiagnosticStatus.WARN, (f"{plan_errors} plan errors, {sum(self.callback_errors.values())} "
                                                     "callback errors so far (see the log)")
        self._plan_errors_reported = plan_errors
        if self.holder.current is None:
            level = DiagnosticStatus.ERROR if self.loader.errors else DiagnosticStatus.WARN
            message = self.loader.status
        elif self.loader.last_error:
            level, message = DiagnosticStatus.WARN, self.loader.last_error + " (planning with the old model)"
        msg = diagnostics(self.get_clock().now().to_msg(), status_name(self.get_fully_qualified_name()),
                          "loop_ros", level, message, values)
        self.diagnostics_pub.publish(msg)

    def _publish_path(self) -> None:
        states = self.worker.latest_mean_states
        if states is None or states is self._published_states:
            return
        self._published_states = states
        positions = self.task.position(states)
        if positions is None:  # the task has no planar position: nothing to draw
            return
        self.plan_pub.publish(path_from_positions(positions, self.get_clock().now().to_msg()))

    def close(self) -> dict:
        """Stop the worker and the loader; returns the summary."""
        self.worker.stop()
        self.loader.stop()
        return self.summary()


def main(argv=None) -> int:
    return run_node(PlannerNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())

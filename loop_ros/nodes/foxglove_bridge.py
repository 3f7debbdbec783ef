"""Foxglove bridge node: what the planner sees and plans, served live to Foxglove.

A lifecycle node (``managed_node.ManagedNode``): configure subscribes ``state``, ``plan``,
``action``, ``episode``, ``/diagnostics`` and the planner's parameter events (``/parameter_events``,
so a live ``safety.keep_in_radius`` edit shows at once) and creates the channels; activate starts
the WebSocket server at ``foxglove.host:foxglove.port`` (127.0.0.1:8765 by default; subprotocol
foxglove.sdk.v1), deactivate stops it. It serves:

- ``/scene`` (foxglove.SceneUpdate, ``foxglove.scene_rate_hz``, entities stamped): the car, the
  planned mean path, the keep-in circle and obstacles, the task's target circle, in ``odom``;
- ``/tf`` (foxglove.FrameTransform ``odom`` -> ``base_link``) per state;
- ``/state``, ``/action``, ``/episode`` and ``/diagnostics/<status>`` as JSON with a JSON schema
  each (``foxglove_scene``), numbers as numbers for the Plot panel (e.g.
  ``/diagnostics/planner/planning.plan_latency_p99_ms``);
- the planner's parameters (Parameters capability, ``foxglove_parameters``): listed with their
  values, edits forwarded to the planner, which validates them; their descriptions and ranges on
  ``<foxglove.planner_node>/parameter_descriptions`` (JSON), which Foxglove's Parameter cannot carry.

With ``foxglove.record`` (``loop-ros up --record FILE``) every message served also goes to that MCAP
file, for review in Foxglove later; an existing file is never overwritten (the bridge does not activate).

A state, path or action that is not finite is counted, logged and not shown; nothing else changes.
``config/foxglove_layout.json`` is a Foxglove layout of these channels.

Run: ``python -m loop_ros.nodes.foxglove_bridge --ros-args --params-file config/rc_car.yaml``
(or ``loop-ros up rc_car --foxglove``), then open Foxglove on ``ws://127.0.0.1:8765``.
"""
from __future__ import annotations

import json
import pathlib
import re
import shutil
from collections import Counter

import foxglove
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from foxglove.channels import FrameTransformChannel, SceneUpdateChannel
from foxglove.websocket import Capability
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import ParameterEvent, ParameterType
from rclpy.expand_topic_name import expand_topic_name
from rclpy.parameter import parameter_value_to_python
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, String

from loop_ros.core.config import ConfigError
from loop_ros.core.odometry import pose_from_odometry
from loop_ros.core.untrusted import MAX_ABS_VALUE, checked_episode
from loop_ros.core.tasks import make_task
from loop_ros.core.tasks.base import ODOMETRY
from loop_ros.nodes import run_node
from loop_ros.nodes.foxglove_parameters import PlannerParameters, PlannerParametersListener, foxglove_parameter
from loop_ros.nodes.foxglove_scene import (ACTION, EPISODE, OBSERVATION_STATE, PARAMETER_DESCRIPTIONS, POSE_STATE,
                                           body_transform, diagnostics_channel, json_channel, numeric_values,
                                           scene_update)
from loop_ros.nodes.managed_node import ManagedNode
from loop_ros.nodes.messages import BODY_FRAME, ODOM_FRAME, checked_array, observation_of_array
from loop_ros.nodes.params import ParameterBinding, edited_configs

SECTIONS = ("task", "safety", "foxglove")
FIXED = ("task.name", "foxglove.host", "foxglove.port", "foxglove.scene_rate_hz", "foxglove.planner_node",
         "foxglove.record")
VIEWER_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
POSE_NAMES = ("x", "y", "yaw", "vx", "vy", "yaw_rate")
"""The world-frame pose of ``pose_from_odometry``, as the ``/state`` channel's fields."""
RECORD_CHECK_S = 1.0
"""The recording is flushed this often (a killed bridge loses at most this much of it), and checked."""
RECORD_MIN_FREE_BYTES = 64 * 2**20
"""Below this much free space on its disk the recording ends, before a full disk fails its writes."""
MAX_PATH_POSES = 1000
"""Longest planned path shown (the planner's has horizon + 1 poses)."""
MAX_DIAGNOSTICS_CHANNELS = 64
"""Diagnostic statuses given a channel each; a peer cannot make the bridge open channels without end."""
PLANNER_TIMEOUT_S = 2.0
"""Longest wait for the planner's answer to one parameter request of a client."""
DESCRIPTIONS_PERIOD_S = 1.0
"""The planner's parameter descriptions, once listed, are sent this often (for clients that subscribe later too)."""


def diagnostics_topic(status_name: str) -> str:
    """``/planner: planning`` -> ``/diagnostics/planner/planning``."""
    return "/diagnostics/" + re.sub(r"[^A-Za-z0-9_/]+", "_", status_name.replace(": ", "/")).strip("/_")


class FoxgloveBridgeNode(ManagedNode):
    """Serves the planner's view (state, plan, constraints, diagnostics) and parameters to Foxglove."""

    def __init__(self, node_name: str = "foxglove_bridge"):
        super().__init__(node_name)
        self.params = ParameterBinding(self, SECTIONS, self._on_settings, read_only=FIXED)
        self.server: foxglove.websocket.WebSocketServer | None = None  # while active
        self.port: int | None = None
        self.recording: foxglove.mcap.MCAPWriter | None = None  # foxglove.record, from the first activation on
        self.recorded_to: str | None = None
        self.record_stopped: str | None = None  # why a recording ended early

    # ------------------------------------------------------------ lifecycle
    def configure_node(self) -> None:
        configs = self.params.configs
        self.task = make_task(configs["task"].name)
        self.safety = configs["safety"]
        # a relative name resolves in the bridge's namespace, as a topic would
        self.planner = expand_topic_name(configs["foxglove"].planner_node, self.get_name(), self.get_namespace())
        self.sent: Counter[str] = Counter()  # messages per channel
        self.invalid: Counter[str] = Counter()  # inputs not shown, by kind
        self.safety_updates = 0
        self._pose: np.ndarray | None = None
        self._plan_xy: np.ndarray | None = None
        self._descriptions: dict | None = None
        pose_states = self.task.state_message == ODOMETRY
        self._make_channels(pose_states)
        self.parameters = PlannerParametersListener(PlannerParameters(self, self.planner, PLANNER_TIMEOUT_S),
                                                    self._show_descriptions, self.count_callback_error,
                                                    self.get_logger())
        # Best effort: a viewer that falls behind must never make a writer of the control loop
        # wait for its acknowledgements.
        state_input = (Odometry, self._on_state) if pose_states else (Float64MultiArray, self._on_array_state)
        for msg_type, topic, callback in ((state_input[0], "state", state_input[1]), (Path, "plan", self._on_plan),
                                          (Float64MultiArray, "action", self._on_action),
                                          (String, "episode", self._on_episode),
                                          (DiagnosticArray, "/diagnostics", self._on_diagnostics)):
            self.create_subscription(msg_type, topic, callback, VIEWER_QOS)
        self.create_subscription(ParameterEvent, "/parameter_events", self._on_parameter_event,
                                 QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT))
        self.create_timer(1.0 / configs["foxglove"].scene_rate_hz, self._publish_scene)
        if configs["foxglove"].record:
            self.create_timer(RECORD_CHECK_S, self._check_recording)
        self.create_timer(DESCRIPTIONS_PERIOD_S, self._publish_descriptions)

    def _start_recording(self, record: str) -> None:
        """At the first activation that serves: every channel logged from then on also goes to the MCAP
        file ``record`` (the SDK's sink), until the node shuts down; a cleanup and configure go on in
        the same file, and a recording that ended early stays ended."""
        if not record or self.recorded_to is not None:
            return
        path = pathlib.Path(record).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # refuses an existing file: a recording is never overwritten; compressed in the logging thread
            self.recording = foxglove.open_mcap(path, writer_options=foxglove.mcap.MCAPWriteOptions(
                compression_threads=0))
        except OSError as error:
            raise ConfigError(f"foxglove.record: cannot record to {path}: {error}") from error
        self.recorded_to = str(path)
        self.get_logger().info(f"recording the view to {path}")

    def _check_recording(self) -> None:
        """Flush the recording; end it when its disk is nearly full or a write failed (the SDK then
        prints an error for every message), so the view goes on without it."""
        if self.recording is None:
            return
        try:
            free = shutil.disk_usage(pathlib.Path(self.recorded_to).parent).free
            if free < RECORD_MIN_FREE_BYTES:
                raise OSError(f"{free / 2**20:.1f} MB left on its disk "
                              f"(at least {RECORD_MIN_FREE_BYTES >> 20} MB kept)")
            self.recording.flush()
        except (OSError, RuntimeError) as error:
            self._stop_recording(f"{error}")

    def _stop_recording(self, reason: str | None) -> None:
        """Close the recording (it writes the file's index and footer); ``reason``: it ends early."""
        recording, self.recording = self.recording, None
        try:
            recording.close()
        except RuntimeError as error:  # a failed write: the file is readable up to its last whole chunk
            reason = f"{reason or 'closing it'}; {error}"
        if reason is not None:
            self.record_stopped = reason
            self.get_logger().error(f"recording to {self.recorded_to} ended: {reason}; the view goes on")

    def on_shutdown(self, state):
        if self.recording is not None:  # before the summary is taken, so it says how the recording ended
            self._stop_recording(None)
        return super().on_shutdown(state)

    def destroy_node(self) -> None:
        if self.recording is not None:  # a node destroyed without a shutdown transition
            self._stop_recording(None)
        super().destroy_node()

    def _make_channels(self, pose_states: bool) -> None:
        """The channels, advertised to clients from activation on (diagnostics ones as statuses arrive)."""
        self.scene_channel = SceneUpdateChannel("/scene")
        self.tf_channel = FrameTransformChannel("/tf")
        self.state_channel = json_channel("/state", "loop_ros.PoseState", "the car's pose and velocity in odom",
                                          POSE_STATE) if pose_states else \
            json_channel("/state", "loop_ros.ObservationState", "the task's state", OBSERVATION_STATE)
        self.action_channel = json_channel("/action", "loop_ros.Action", "the planner's action", ACTION)
        self.episode_channel = json_channel("/episode", "loop_ros.Episode", "one finished episode", EPISODE)
        self.descriptions_channel = json_channel(f"{self.planner}/parameter_descriptions",
                                                 "loop_ros.ParameterDescriptions", f"the parameters of {self.planner}",
                                                 PARAMETER_DESCRIPTIONS)
        self.diagnostics_channels: dict[str, foxglove.Channel] = {}

    def activate_node(self) -> None:
        server_config = self.params.configs["foxglove"]
        try:
            self.server = foxglove.start_server(name=self.get_name(), host=server_config.host, port=server_config.port,
                                                capabilities=[Capability.Parameters], server_listener=self.parameters)
        except RuntimeError as error:  # e.g. the port is taken: a setting the user must change
            raise ConfigError(f"foxglove.port: no server on {server_config.host}:{server_config.port}: {error}") from error
        self.port = self.server.port  # the bound one (foxglove.port 0: a free port)
        try:
            self._start_recording(server_config.record)
        except ConfigError:
            self.deactivate_node()
            raise
        self.parameters.serve(self.server)
        self.get_logger().info(f"Foxglove: open ws://{server_config.host}:{self.port} "
                               "(the scene's fixed frame is 'odom')")

    def deactivate_node(self) -> None:
        self.parameters.serve(None)  # a request waiting for the planner ends now, not at its deadline
        server, self.server = self.server, None
        server.stop()

    def close(self) -> dict:
        """Destroys the parameter clients and closes the channels (what configure made besides the
        subscriptions and timers, which ManagedNode destroys); returns the summary."""
        self.parameters.planner.destroy()
        for channel in (self.scene_channel, self.tf_channel, self.state_channel, self.action_channel,
                        self.episode_channel, self.descriptions_channel, *self.diagnostics_channels.values()):
            channel.close()
        return self.summary()

    # ------------------------------------------------------------ inputs
    def _on_settings(self, configs: dict) -> None:
        self.safety = configs["safety"]

    def _on_state(self, msg: Odometry) -> None:
        pose = pose_from_odometry(msg)
        if pose is None:
            self._count_invalid("state", "non-finite state or non-unit orientation")
            return
        self._pose = pose
        if self.server is not None:
            self.tf_channel.log(body_transform(pose, ODOM_FRAME, BODY_FRAME, _stamp_ns(msg.header.stamp)))
            self.sent["/tf"] += 1
        fields = dict(zip(POSE_NAMES, pose.tolist()))
        fields.update(speed=float(np.hypot(pose[3], pose[4])), radius=float(np.hypot(pose[0], pose[1])))
        self._log_json(self.state_channel, fields)

    def _on_array_state(self, msg: Float64MultiArray) -> None:
        """A task without a pose: its observation as numbers, for the Plot panel (no scene body)."""
        obs = observation_of_array(msg, self.task)
        if obs is None:
            self._count_invalid("state", "state of the wrong size, non-finite or too large")
            return
        self._log_json(self.state_channel, {"observation": obs.tolist()})

    def _on_plan(self, msg: Path) -> None:
        if len(msg.poses) > MAX_PATH_POSES:
            self._count_invalid("plan", f"planned path of {len(msg.poses)} poses (at most {MAX_PATH_POSES})")
            return
        xy = np.array([(p.pose.position.x, p.pose.position.y) for p in msg.poses], dtype=float).reshape(-1, 2)
        if not np.all(np.isfinite(xy)) or np.any(np.abs(xy) > MAX_ABS_VALUE):
            self._count_invalid("plan", "non-finite or huge planned path")
            return
        self._plan_xy = xy

    def _on_action(self, msg: Float64MultiArray) -> None:
        action = checked_array(msg, self.task.act_dim)
        if action is None:
            self._count_invalid("action", "non-finite or wrong-sized action")
            return
        self._log_json(self.action_channel, {"action": action.tolist()})

    def _on_episode(self, msg: String) -> None:
        record = checked_episode(msg.data)
        if record is None:
            self._count_invalid("episode", "episode message that is not a JSON object")
            return
        self._log_json(self.episode_channel, record)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            topic = diagnostics_topic(status.name)
            if topic not in self.diagnostics_channels and len(self.diagnostics_channels) >= MAX_DIAGNOSTICS_CHANNELS:
                self._count_invalid("diagnostics", f"more than {MAX_DIAGNOSTICS_CHANNELS} diagnostic statuses")
                continue
            level = status.level[0] if isinstance(status.level, bytes) else int(status.level)
            values = numeric_values({kv.key: kv.value for kv in status.values})
            if topic not in self.diagnostics_channels:
                self.diagnostics_channels[topic] = diagnostics_channel(topic, values)
            self._log_json(self.diagnostics_channels[topic], {"level": level, "message": status.message, **values})

    def _on_parameter_event(self, event: ParameterEvent) -> None:
        """The planner's accepted edits (refused edits publish no event): shown to the clients that
        watch those parameters, and its ``safety.*`` ones drawn in the scene."""
        if event.node != self.planner:
            return
        # A parameter declared without a value (the planner's empty lists, set right after)
        # comes as NOT_SET: there is nothing to show yet.
        changed = [p for p in (*event.new_parameters, *event.changed_parameters)
                   if p.value.type != ParameterType.PARAMETER_NOT_SET]
        if self.server is not None and changed:
            self.server.publish_parameter_values([foxglove_parameter(p.name, p.value) for p in changed])
        edits = {p.name: parameter_value_to_python(p.value) for p in changed if p.name.startswith("safety.")}
        if not edits:
            return
        try:
            self.safety = edited_configs({"safety": self.safety}, edits)["safety"]
        except ConfigError as error:
            self._count_invalid("parameter_event", f"planner safety edit not shown: {error}")
            return
        self.safety_updates += 1

    def _show_descriptions(self, records: list[dict]) -> None:
        """From a server thread, after each parameter listing: kept for ``_publish_descriptions``."""
        self._descriptions = {"node": self.planner, "parameters": records}

    # ------------------------------------------------------------ outputs
    def _publish_scene(self) -> None:
        # Sent at a fixed rate, not on change, so a viewer that connects later gets the whole scene.
        if self.server is None:
            return
        stamp_ns = self.get_clock().now().nanoseconds
        self.scene_channel.log(scene_update(ODOM_FRAME, stamp_ns, self._pose, self._plan_xy, self.safety,
                                            self.task.view_circles()))
        self.sent["/scene"] += 1

    def _publish_descriptions(self) -> None:
        if self._descriptions is not None:
            self._log_json(self.descriptions_channel, self._descriptions)

    def _log_json(self, channel: foxglove.Channel, payload: dict) -> None:
        """Sent while serving; a payload with a NaN or infinity is not (Foxglove's JSON has none)."""
        if self.server is None:
            return
        try:
            text = json.dumps(payload, allow_nan=False)
        except ValueError:
            self._count_invalid(channel.topic().strip("/"), "a non-finite number")
            return
        channel.log(text)
        self.sent[channel.topic()] += 1

    def _count_invalid(self, what: str, reason: str) -> None:
        self.invalid[what] += 1
        self.get_logger().warning(f"{reason}: not shown", throttle_duration_sec=2.0)

    def summary(self) -> dict:
        """The server's port, messages sent per channel since the last configure (each also recorded to
        ``recorded_to``, unless ``record_stopped`` says why not), inputs not shown, parameter requests
        of the clients, and the geometry shown."""
        return {"port": self.port, "sent": dict(sorted(self.sent.items())), "recorded_to": self.recorded_to,
                "record_stopped": self.record_stopped, "invalid": dict(self.invalid),
                "callback_errors": dict(self.callback_errors),
                "parameter_requests": dict(self.parameters.requests),
                "safety_updates": self.safety_updates,
                "safety": {"keep_in_radius": self.safety.keep_in_radius, "obstacles": list(self.safety.obstacles)}}


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def main(argv=None) -> int:
    return run_node(FoxgloveBridgeNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Foxglove bridge node: what the planner sees and plans, served live to Foxglove.

Subscribes ``state``, ``plan``, ``action``, ``episode``, ``/diagnostics`` and the planner's
accepted parameter edits (``/parameter_events``, so a live ``safety.keep_in_radius`` edit shows at
once) and serves, on a WebSocket at ``foxglove.host:foxglove.port`` (127.0.0.1:8765 by default;
subprotocol foxglove.sdk.v1):

- ``/scene`` (foxglove.SceneUpdate, ``foxglove.scene_rate_hz``): the car, the planned mean path,
  the keep-in circle and obstacles, the task's target circle, in ``odom``;
- ``/tf`` (foxglove.FrameTransform ``odom`` -> ``base_link``) per state;
- ``/state``, ``/action``, ``/episode`` and ``/diagnostics/<status>`` as JSON, numbers as numbers
  for the Plot panel (e.g. ``/diagnostics/planner/planning.plan_latency_p99_ms``).

A state, path or action that is not finite is counted, logged and not shown; nothing else changes.

Run: ``python -m loop_ros.nodes.foxglove_bridge --ros-args --params-file config/rc_car.yaml``
(or ``loop-ros up rc_car --foxglove``), then open Foxglove on ``ws://127.0.0.1:8765``.
"""
from __future__ import annotations

import re
from collections import Counter

import foxglove
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from foxglove.channels import FrameTransformChannel, SceneUpdateChannel
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import ParameterEvent
from rclpy.parameter import parameter_value_to_python
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, String

from loop_ros.core.config import ConfigError
from loop_ros.core.odometry import pose_from_odometry
from loop_ros.core.untrusted import MAX_ABS_VALUE, checked_episode
from loop_ros.core.tasks import make_task
from loop_ros.core.tasks.base import ODOMETRY
from loop_ros.nodes import run_node
from loop_ros.nodes.guarded_node import GuardedNode
from loop_ros.nodes.foxglove_scene import body_transform, numeric_values, scene_update
from loop_ros.nodes.messages import BODY_FRAME, ODOM_FRAME, checked_array, observation_of_array
from loop_ros.nodes.params import ParameterBinding, edited_configs

SECTIONS = ("task", "safety", "foxglove")
FIXED = ("task.name", "foxglove.host", "foxglove.port", "foxglove.scene_rate_hz")
VIEWER_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
POSE_NAMES = ("x", "y", "yaw", "vx", "vy", "yaw_rate")
"""The world-frame pose of ``pose_from_odometry``, as the ``/state`` channel's fields."""
MAX_PATH_POSES = 1000
"""Longest planned path shown (the planner's has horizon + 1 poses)."""
MAX_DIAGNOSTICS_CHANNELS = 64
"""Diagnostic statuses given a channel each; a peer cannot make the bridge open channels without end."""


def diagnostics_topic(status_name: str) -> str:
    """``/planner: planning`` -> ``/diagnostics/planner/planning``."""
    return "/diagnostics/" + re.sub(r"[^A-Za-z0-9_/]+", "_", status_name.replace(": ", "/")).strip("/_")


class FoxgloveBridgeNode(GuardedNode):
    """Serves the planner's view (state, plan, constraints, diagnostics) to Foxglove."""

    def __init__(self, node_name: str = "foxglove_bridge"):
        super().__init__(node_name)
        self.params = ParameterBinding(self, SECTIONS, self._on_settings, read_only=FIXED)
        configs = self.params.configs
        self.task = make_task(configs["task"].name)
        self.safety = configs["safety"]
        self.sent: Counter[str] = Counter()  # messages per channel
        self.invalid: Counter[str] = Counter()  # inputs not shown, by kind
        self.safety_updates = 0
        self._pose: np.ndarray | None = None
        self._plan_xy: np.ndarray | None = None
        server_config = configs["foxglove"]
        try:
            self.server = foxglove.start_server(name=node_name, host=server_config.host, port=server_config.port)
        except RuntimeError as error:  # e.g. the port is taken: a setting the user must change
            raise ConfigError(f"foxglove.port: no server on {server_config.host}:{server_config.port}: {error}") from error
        self.port = self.server.port  # the bound one (foxglove.port 0: a free port)
        self.scene_channel = SceneUpdateChannel("/scene")
        self.tf_channel = FrameTransformChannel("/tf")
        self.json_channels = {name: foxglove.Channel(name) for name in ("/state", "/action", "/episode")}
        self.diagnostics_channels: dict[str, foxglove.Channel] = {}
        # Best effort: a viewer that falls behind must never make a writer of the control loop
        # wait for its acknowledgements.
        pose_states = self.task.state_message == ODOMETRY
        state_input = (Odometry, self._on_state) if pose_states else (Float64MultiArray, self._on_array_state)
        for msg_type, topic, callback in ((*state_input[:1], "state", state_input[1]), (Path, "plan", self._on_plan),
                                          (Float64MultiArray, "action", self._on_action),
                                          (String, "episode", self._on_episode),
                                          (DiagnosticArray, "/diagnostics", self._on_diagnostics)):
            self.create_subscription(msg_type, topic, callback, VIEWER_QOS)
        self.create_subscription(ParameterEvent, "/parameter_events", self._on_parameter_event,
                                 QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT))
        self.create_timer(1.0 / server_config.scene_rate_hz, self._publish_scene)
        self.get_logger().info(f"Foxglove: open ws://{server_config.host}:{self.port} "
                               "(the scene's fixed frame is 'odom')")

    # ------------------------------------------------------------ inputs
    def _on_settings(self, configs: dict) -> None:
        self.safety = configs["safety"]

    def _on_state(self, msg: Odometry) -> None:
        pose = pose_from_odometry(msg)
        if pose is None:
            self._count_invalid("state", "non-finite state or non-unit orientation")
            return
        self._pose = pose
        self.tf_channel.log(body_transform(pose, ODOM_FRAME, BODY_FRAME, _stamp_ns(msg.header.stamp)))
        self.sent["/tf"] += 1
        fields = dict(zip(POSE_NAMES, pose.tolist()))
        fields.update(speed=float(np.hypot(pose[3], pose[4])), radius=float(np.hypot(pose[0], pose[1])))
        self._log_json("/state", fields)

    def _on_array_state(self, msg: Float64MultiArray) -> None:
        """A task without a pose: its observation as numbers, for the Plot panel (no scene body)."""
        obs = observation_of_array(msg, self.task)
        if obs is None:
            self._count_invalid("state", "state of the wrong size, non-finite or too large")
            return
        self._log_json("/state", {"observation": obs.tolist()})

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
        self._log_json("/action", {"action": action.tolist()})

    def _on_episode(self, msg: String) -> None:
        record = checked_episode(msg.data)
        if record is None:
            self._count_invalid("episode", "episode message that is not a JSON object")
            return
        self._log_json("/episode", record)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            topic = diagnostics_topic(status.name)
            if topic not in self.diagnostics_channels and len(self.diagnostics_channels) >= MAX_DIAGNOSTICS_CHANNELS:
                self._count_invalid("diagnostics", f"more than {MAX_DIAGNOSTICS_CHANNELS} diagnostic statuses")
                continue
            if topic not in self.diagnostics_channels:
                self.diagnostics_channels[topic] = foxglove.Channel(topic)
            level = status.level[0] if isinstance(status.level, bytes) else int(status.level)
            values = numeric_values({kv.key: kv.value for kv in status.values})
            self.diagnostics_channels[topic].log({"level": level, "message": status.message, **values})
            self.sent[topic] += 1

    def _on_parameter_event(self, event: ParameterEvent) -> None:
        """The planner's accepted edits of ``safety.*`` (refused edits publish no event)."""
        if event.node != self.params.configs["foxglove"].planner_node:
            return
        edits = {p.name: parameter_value_to_python(p.value)
                 for p in (*event.new_parameters, *event.changed_parameters) if p.name.startswith("safety.")}
        if not edits:
            return
        try:
            self.safety = edited_configs({"safety": self.safety}, edits)["safety"]
        except ConfigError as error:
            self._count_invalid("parameter_event", f"planner safety edit not shown: {error}")
            return
        self.safety_updates += 1

    # ------------------------------------------------------------ outputs
    def _publish_scene(self) -> None:
        # Sent at a fixed rate, not on change, so a viewer that connects later gets the whole scene.
        self.scene_channel.log(scene_update(ODOM_FRAME, self._pose, self._plan_xy, self.safety, self.task.view_circles()))
        self.sent["/scene"] += 1

    def _log_json(self, topic: str, payload: dict) -> None:
        self.json_channels[topic].log(payload)
        self.sent[topic] += 1

    def _count_invalid(self, what: str, reason: str) -> None:
        self.invalid[what] += 1
        self.get_logger().warning(f"{reason}: not shown", throttle_duration_sec=2.0)

    def summary(self) -> dict:
        """The server's port, messages sent per channel, inputs not shown, and the geometry shown."""
        return {"port": self.port, "sent": dict(sorted(self.sent.items())), "invalid": dict(self.invalid),
                "callback_errors": dict(self.callback_errors),
                "safety_updates": self.safety_updates,
                "safety": {"keep_in_radius": self.safety.keep_in_radius, "obstacles": list(self.safety.obstacles)}}

    def close(self) -> dict:
        self.server.stop()
        return self.summary()


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def main(argv=None) -> int:
    return run_node(FoxgloveBridgeNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""What the planner sees and plans, as Foxglove messages (foxglove-sdk); no rclpy here.

The scene is in the ``odom`` frame: the car (a box at its pose), the planned mean path, the
keep-in circle and obstacles (red), and the task's target circle (grey), when it has one.

The bridge's JSON channels carry a JSON schema each: Foxglove lists a channel's fields (the Plot
panel's path completion, the Raw Messages tree) from its schema, and it merges schemas by name
across channels, so every distinct schema here has its own name. Only plain ``"type"`` strings
are used, which Foxglove's JSON-schema reader takes; a number not known yet is sent as ``null``
under a ``number`` field.
"""
from __future__ import annotations

import json
import math
import re

import foxglove
import foxglove.messages as fm
import numpy as np

from loop_ros.core.config import SafetyConfig

CIRCLE_SEGMENTS = 96
CAR_SIZE = (0.33, 0.19, 0.10)
"""Box drawn for the 1/10-scale car (m)."""
CONSTRAINT_COLOR = fm.Color(r=0.9, g=0.15, b=0.15, a=1.0)
TARGET_COLOR = fm.Color(r=0.6, g=0.6, b=0.6, a=1.0)
PLAN_COLOR = fm.Color(r=0.1, g=0.6, b=1.0, a=1.0)
CAR_COLOR = fm.Color(r=1.0, g=0.75, b=0.1, a=1.0)
LINE_THICKNESS = 0.02


def yaw_quaternion(yaw: float) -> fm.Quaternion:
    return fm.Quaternion(x=0.0, y=0.0, z=math.sin(0.5 * yaw), w=math.cos(0.5 * yaw))


def line(points_xy: np.ndarray, color: fm.Color) -> fm.LinePrimitive:
    """A line strip through the planar points ``(T, 2)``."""
    return fm.LinePrimitive(type=fm.LinePrimitiveLineType.LineStrip, thickness=LINE_THICKNESS, color=color,
                            points=[fm.Point3(x=float(x), y=float(y), z=0.0) for x, y in points_xy])


def circle_points(cx: float, cy: float, radius: float, segments: int = CIRCLE_SEGMENTS) -> np.ndarray:
    """``segments + 1`` points around the circle, the first repeated last to close it."""
    angles = np.linspace(0.0, 2.0 * np.pi, segments + 1)
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)


def constraint_lines(safety: SafetyConfig) -> list[fm.LinePrimitive]:
    """The keep-in circle (when enabled) and every circular obstacle."""
    circles = [(0.0, 0.0, safety.keep_in_radius)] if safety.keep_in_radius > 0 else []
    obstacles = safety.obstacles
    circles += [(obstacles[i], obstacles[i + 1], obstacles[i + 2]) for i in range(0, len(obstacles), 3)]
    return [line(circle_points(*circle), CONSTRAINT_COLOR) for circle in circles]


def timestamp(stamp_ns: int) -> fm.Timestamp:
    return fm.Timestamp(sec=stamp_ns // 1_000_000_000, nsec=stamp_ns % 1_000_000_000)


def scene_update(frame: str, stamp_ns: int, pose: np.ndarray | None, plan_xy: np.ndarray | None,
                 safety: SafetyConfig, targets: list[tuple[float, float, float]]) -> fm.SceneUpdate:
    """One SceneUpdate with the entities ``constraints``, ``target``, ``plan`` and ``car``, each
    stamped ``stamp_ns`` (the 3D panel places an entity by its frame at its time); ``pose`` is
    (x, y, yaw, ...) and ``plan_xy`` the planned positions ``(T, 2)``, each None until first
    received (its entity is then empty); ``targets`` are the task's circles (x, y, r)."""
    def entity(name: str, **primitives) -> fm.SceneEntity:
        return fm.SceneEntity(id=name, timestamp=timestamp(stamp_ns), frame_id=frame, **primitives)

    target = [line(circle_points(*circle), TARGET_COLOR) for circle in targets]
    plan = [line(plan_xy, PLAN_COLOR)] if plan_xy is not None and len(plan_xy) else []
    car = []
    if pose is not None:
        car_pose = fm.Pose(position=fm.Vector3(x=float(pose[0]), y=float(pose[1]), z=0.5 * CAR_SIZE[2]),
                           orientation=yaw_quaternion(float(pose[2])))
        car = [fm.CubePrimitive(pose=car_pose, size=fm.Vector3(x=CAR_SIZE[0], y=CAR_SIZE[1], z=CAR_SIZE[2]),
                                color=CAR_COLOR)]
    return fm.SceneUpdate(entities=[entity("constraints", lines=constraint_lines(safety)),
                                    entity("target", lines=target), entity("plan", lines=plan),
                                    entity("car", cubes=car)])


def body_transform(pose: np.ndarray, parent: str, child: str, timestamp_ns: int) -> fm.FrameTransform:
    """The transform ``parent`` -> ``child`` of the car at ``pose`` (x, y, yaw, ...)."""
    return fm.FrameTransform(timestamp=timestamp(timestamp_ns), parent_frame_id=parent, child_frame_id=child,
                             translation=fm.Vector3(x=float(pose[0]), y=float(pose[1]), z=0.0),
                             rotation=yaw_quaternion(float(pose[2])))


def numeric_values(values: dict[str, str]) -> dict[str, float | str | None]:
    """Diagnostic KeyValue strings with numbers as numbers, so Foxglove's Plot panel can draw them;
    "None" (no figure yet) and non-finite numbers become None: JSON has no NaN, and Foxglove
    would refuse a message holding one."""
    def parsed(text: str) -> float | str | None:
        try:
            number = float(text)
        except ValueError:
            return None if text == "None" else text
        return number if math.isfinite(number) else None

    return {key: parsed(value) for key, value in values.items()}


# ---------------------------------------------------------------- JSON channels with a schema
NUMBER = {"type": "number"}
INTEGER = {"type": "integer"}
STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}


def number(description: str) -> dict:
    return {**NUMBER, "description": description}


def json_channel(topic: str, name: str, description: str, properties: dict) -> foxglove.Channel:
    """A JSON channel on ``topic`` whose schema ``name`` describes the object's ``properties``."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": name,
              "description": description, "type": "object", "properties": properties}
    return foxglove.Channel(topic, message_encoding="json",
                            schema=foxglove.Schema(name=name, encoding="jsonschema", data=json.dumps(schema).encode()))


POSE_STATE = {
    "x": number("position x in odom (m)"), "y": number("position y in odom (m)"),
    "yaw": number("heading in odom (rad)"),
    "vx": number("velocity x in odom (m/s)"), "vy": number("velocity y in odom (m/s)"),
    "yaw_rate": number("yaw rate (rad/s)"),
    "speed": number("planar speed (m/s)"), "radius": number("distance from the origin, the keep-in centre (m)"),
}
OBSERVATION_STATE = {"observation": {"type": "array", "items": NUMBER, "description": "the task's observation"}}
ACTION = {"action": {"type": "array", "items": NUMBER, "description": "the action the planner sent"}}
EPISODE = {
    "episode": INTEGER, "return": number("sum of rewards"), "cost": number("sum of safety costs"),
    "violations": {**INTEGER, "description": "steps with a cost > 0"}, "mean_speed": number("m/s"),
    "steps": INTEGER, "terminated": BOOLEAN, "stamp_ns": {**INTEGER, "description": "end of the episode, ROS time (ns)"},
    "wall_time": number("end of the episode, Unix time (s)"),
}
_RANGE = {"type": "object", "properties": {"from_value": NUMBER, "to_value": NUMBER, "step": NUMBER}}
PARAMETER_DESCRIPTIONS = {
    "node": {**STRING, "description": "the node whose parameters these are"},
    "parameters": {"type": "array", "items": {"type": "object", "properties": {
        "name": STRING, "type": STRING, "description": STRING, "read_only": BOOLEAN,
        "additional_constraints": STRING,
        "floating_point_range": {**_RANGE, "description": "null: no range"},
        "integer_range": {**_RANGE, "description": "null: no range"},
    }}},
}


def diagnostics_channel(topic: str, first_values: dict) -> foxglove.Channel:
    """The channel of one diagnostic status, its fields those of the status's first message
    (``level``, ``message`` and its values: a number field for each value that was a number or
    None then, a string field for the others); values a status adds later are still sent."""
    properties = {"level": {**INTEGER, "description": "0 OK, 1 WARN, 2 ERROR, 3 STALE"}, "message": STRING}
    properties.update({key: STRING if isinstance(value, str) else NUMBER for key, value in first_values.items()})
    name = "loop_ros.diagnostics." + re.sub(r"[^A-Za-z0-9_]+", "_", topic.removeprefix("/diagnostics/"))
    return json_channel(topic, name, f"the diagnostic status {topic}, numbers as numbers", properties)

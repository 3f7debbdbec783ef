"""What the planner sees and plans, as Foxglove messages (foxglove-sdk); no rclpy here.

The scene is in the ``odom`` frame: the car (a box at its pose), the planned mean path, the
keep-in circle and obstacles (red), and the task's target circle (grey), when it has one.
"""
from __future__ import annotations

import math

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


def scene_update(frame: str, pose: np.ndarray | None, plan_xy: np.ndarray | None, safety: SafetyConfig,
                 targets: list[tuple[float, float, float]]) -> fm.SceneUpdate:
    """One SceneUpdate with the entities ``constraints``, ``target``, ``plan`` and ``car``;
    ``pose`` is (x, y, yaw, ...) and ``plan_xy`` the planned positions ``(T, 2)``, each None
    until first received (its entity is then empty); ``targets`` are the task's circles (x, y, r)."""
    def entity(name: str, **primitives) -> fm.SceneEntity:
        return fm.SceneEntity(id=name, frame_id=frame, **primitives)

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
    return fm.FrameTransform(timestamp=fm.Timestamp(sec=timestamp_ns // 1_000_000_000, nsec=timestamp_ns % 1_000_000_000),
                             parent_frame_id=parent, child_frame_id=child,
                             translation=fm.Vector3(x=float(pose[0]), y=float(pose[1]), z=0.0),
                             rotation=yaw_quaternion(float(pose[2])))


def numeric_values(values: dict[str, str]) -> dict[str, float | str]:
    """Diagnostic KeyValue strings with numbers as numbers, so Foxglove's Plot panel can draw them."""
    def parsed(text: str) -> float | str:
        try:
            return float(text)
        except ValueError:
            return text

    return {key: parsed(value) for key, value in values.items()}

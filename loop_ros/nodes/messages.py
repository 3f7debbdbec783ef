"""ROS messages <-> numpy arrays: the only place the nodes touch message fields.

Odometry follows REP-105: pose in ``odom``, twist in the body frame ``base_link``.
The core works with the world-frame pose ``(x, y, yaw, vx_world, vy_world, yaw_rate)``.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from std_msgs.msg import Float64MultiArray

ODOM_FRAME = "odom"
BODY_FRAME = "base_link"
QUATERNION_NORM_TOLERANCE = 1e-3


def odometry_from_pose(pose: Iterable[float], stamp, frame_id: str = ODOM_FRAME,
                       child_frame_id: str = BODY_FRAME) -> Odometry:
    """World pose (x, y, yaw, vx_world, vy_world, yaw_rate) -> Odometry, twist rotated into the body."""
    x, y, yaw, vx_world, vy_world, yaw_rate = (float(v) for v in pose)
    msg = Odometry()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.child_frame_id = child_frame_id
    msg.pose.pose.position.x, msg.pose.pose.position.y = x, y
    msg.pose.pose.orientation.z = math.sin(0.5 * yaw)
    msg.pose.pose.orientation.w = math.cos(0.5 * yaw)
    cos_yaw, sin_yaw = math.cos(yaw), math.sin(yaw)
    msg.twist.twist.linear.x = cos_yaw * vx_world + sin_yaw * vy_world
    msg.twist.twist.linear.y = -sin_yaw * vx_world + cos_yaw * vy_world
    msg.twist.twist.angular.z = yaw_rate
    return msg


def float_array(values: Iterable[float]) -> Float64MultiArray:
    msg = Float64MultiArray()
    msg.data = [float(v) for v in values]
    return msg


def checked_vector(msg: Float64MultiArray, size: int) -> np.ndarray | None:
    """``msg.data`` as a float64 ``(size,)`` array, or None when the size is wrong or a value is not finite."""
    values = np.asarray(msg.data, dtype=float)
    if values.shape != (size,) or not np.all(np.isfinite(values)):
        return None
    return values


def path_from_positions(positions: np.ndarray, stamp, frame_id: str = ODOM_FRAME) -> Path:
    """Planar positions ``(T, 2)`` -> nav_msgs/Path in ``frame_id``."""
    msg = Path()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    for x, y in np.asarray(positions, dtype=float):
        pose = PoseStamped()
        pose.header = msg.header
        pose.pose.position.x, pose.pose.position.y = float(x), float(y)
        pose.pose.orientation.w = 1.0
        msg.poses.append(pose)
    return msg


def diagnostics(stamp, name: str, hardware_id: str, level: bytes, message: str,
                values: Mapping[str, object]) -> DiagnosticArray:
    """One-status DiagnosticArray (``level``: DiagnosticStatus.OK / WARN / ERROR); values become
    KeyValue strings (floats with 4 significant digits)."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=key, value=_text(value)) for key, value in values.items()]
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = [status]
    return msg


def diagnostic_values(msg: DiagnosticArray, name: str) -> dict[str, str] | None:
    """KeyValues of the status called ``name`` (for the tests and tools), or None."""
    for status in msg.status:
        if status.name == name:
            return {kv.key: kv.value for kv in status.values}
    return None


def _text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

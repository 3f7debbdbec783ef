"""nav_msgs/Odometry <-> the world-frame planar pose ``(x, y, yaw, vx_world, vy_world, yaw_rate)``.

REP-105: the pose is in ``odom``, the twist in the body frame ``base_link``. Both directions
live here, on plain numbers, so the nodes (rclpy messages) and the replay (rosbags messages)
convert alike. The parse is part of the trust boundary (``core.untrusted``): it reads the
fields into one checked float64 array first, so no value of a peer's message can overflow a
Python float or reach the math unchecked.
"""
from __future__ import annotations

import math

import numpy as np

from loop_ros.core.untrusted import checked_vector

QUATERNION_NORM_TOLERANCE = 1e-3
"""An orientation is accepted when its quaternion's norm is within this of 1."""


def pose_from_odometry(msg) -> np.ndarray | None:
    """Odometry (rclpy's or rosbags' message) -> world pose ``(6,)``; None when a field is not a
    finite number of sane magnitude (``core.untrusted``) or the orientation is no unit quaternion."""
    q, p, v = msg.pose.pose.orientation, msg.pose.pose.position, msg.twist.twist
    fields = checked_vector([p.x, p.y, q.x, q.y, q.z, q.w, v.linear.x, v.linear.y, v.angular.z], 9)
    if fields is None:
        return None
    x, y, qx, qy, qz, qw, v_long, v_lat, yaw_rate = fields
    if abs(math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw) - 1.0) > QUATERNION_NORM_TOLERANCE:
        return None
    yaw = math.atan2(2.0 * (qw * qz + qx * qy), 1.0 - 2.0 * (qy * qy + qz * qz))
    cos_yaw, sin_yaw = math.cos(yaw), math.sin(yaw)
    return np.array([x, y, yaw, cos_yaw * v_long - sin_yaw * v_lat, sin_yaw * v_long + cos_yaw * v_lat, yaw_rate])


def odometry_fields(pose) -> dict[str, float]:
    """World pose -> the Odometry fields that carry it: position, yaw quaternion (z, w) and the
    twist rotated into the body frame."""
    x, y, yaw, vx_world, vy_world, yaw_rate = (float(v) for v in pose)
    cos_yaw, sin_yaw = math.cos(yaw), math.sin(yaw)
    return {"x": x, "y": y, "qz": math.sin(0.5 * yaw), "qw": math.cos(0.5 * yaw),
            "v_long": cos_yaw * vx_world + sin_yaw * vy_world, "v_lat": -sin_yaw * vx_world + cos_yaw * vy_world,
            "yaw_rate": yaw_rate}

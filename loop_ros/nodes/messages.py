"""ROS messages <-> numpy arrays: the only place the nodes touch message fields.

Odometry follows REP-105: pose in ``odom``, twist in the body frame ``base_link``.
The core works with the world-frame pose ``(x, y, yaw, vx_world, vy_world, yaw_rate)``.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from loop_ros.core.array_state import array_state_values, parse_array_state
from loop_ros.core.odometry import odometry_fields
from loop_ros.core.untrusted import checked_vector

ODOM_FRAME = "odom"
BODY_FRAME = "base_link"


def odometry_from_pose(pose: Iterable[float], stamp, frame_id: str = ODOM_FRAME,
                       child_frame_id: str = BODY_FRAME) -> Odometry:
    """World pose (x, y, yaw, vx_world, vy_world, yaw_rate) -> Odometry (``core.odometry``)."""
    fields = odometry_fields(pose)
    msg = Odometry()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.child_frame_id = child_frame_id
    msg.pose.pose.position.x, msg.pose.pose.position.y = fields["x"], fields["y"]
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = fields["qz"], fields["qw"]
    msg.twist.twist.linear.x, msg.twist.twist.linear.y = fields["v_long"], fields["v_lat"]
    msg.twist.twist.angular.z = fields["yaw_rate"]
    return msg


def float_array(values: Iterable[float]) -> Float64MultiArray:
    msg = Float64MultiArray()
    msg.data = [float(v) for v in values]
    return msg


def checked_array(msg: Float64MultiArray, size: int) -> np.ndarray | None:
    """``msg.data`` checked as ``core.untrusted.checked_vector`` does (None: wrong size, not finite, too large)."""
    return checked_vector(msg.data, size)


def observation_of_array(msg: Float64MultiArray, task) -> np.ndarray | None:
    """The observation of an ``ARRAY`` state message (``core.array_state``), None when it fails the checks."""
    state = parse_array_state(msg.data, task)
    return None if state is None else state.obs


def state_key(msg, task) -> int | None:
    """What a state message is named by in lock-step: an array state's step count, else the stamp (ns)."""
    if isinstance(msg, Odometry):
        return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
    state = parse_array_state(msg.data, task)
    return None if state is None else state.step


ANSWER_LABEL = "answers_state_"
"""Lock-step: an action's dimension label names the state it answers (``ANSWER_LABEL`` + its key)."""


def answer(action: np.ndarray, key: int | None) -> Float64MultiArray:
    """An action that says which state it answers (the lock-step sim takes only the awaited one's)."""
    msg = float_array(action)
    if key is not None:
        msg.layout.dim = [MultiArrayDimension(label=f"{ANSWER_LABEL}{key}", size=len(msg.data), stride=len(msg.data))]
    return msg


def answered_key(msg: Float64MultiArray) -> int | None:
    """The key of the state an action answers (``answer``), None when it names none."""
    label = msg.layout.dim[0].label if len(msg.layout.dim) == 1 else ""
    try:
        return int(label.removeprefix(ANSWER_LABEL)) if label.startswith(ANSWER_LABEL) else None
    except ValueError:
        return None


def array_state(task, obs: np.ndarray, action=None, reward: float = 0.0, step: int = 0,
                terminated: bool = False) -> Float64MultiArray:
    """The ``ARRAY`` state message of ``obs`` (the sim's; ``core.array_state``)."""
    return float_array(array_state_values(task, obs, action, reward, step, terminated))


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

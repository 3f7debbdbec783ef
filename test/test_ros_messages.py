"""Message <-> array conversions of the nodes (REP-105 odometry, paths, diagnostics)."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("nav_msgs")
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from loop_ros.core.odometry import pose_from_odometry  # noqa: E402
from loop_ros.nodes.messages import (checked_array, diagnostic_values, diagnostics, odometry_from_pose,  # noqa: E402
                                     path_from_positions)


def test_odometry_has_the_yaw_quaternion_and_the_body_frame_twist():
    # Heading +y (yaw 90 deg) while moving in world +y at 2 m/s and drifting to world -x at 0.5 m/s:
    # in the body frame that is 2 m/s forward (x) and 0.5 m/s to the left (+y).
    msg = odometry_from_pose((1.0, -2.0, math.pi / 2, -0.5, 2.0, 0.3), Time(sec=5))
    q = msg.pose.pose.orientation
    assert (q.x, q.y) == (0.0, 0.0) and q.z == pytest.approx(math.sqrt(0.5)) and q.w == pytest.approx(math.sqrt(0.5))
    assert (msg.pose.pose.position.x, msg.pose.pose.position.y) == (1.0, -2.0)
    assert msg.twist.twist.linear.x == pytest.approx(2.0) and msg.twist.twist.linear.y == pytest.approx(0.5)
    assert msg.twist.twist.angular.z == 0.3
    assert (msg.header.frame_id, msg.child_frame_id, msg.header.stamp.sec) == ("odom", "base_link", 5)


@pytest.mark.parametrize("yaw", [0.0, 1.0, -2.5, math.pi - 1e-6])
def test_pose_round_trips_through_odometry(yaw):
    pose = (0.3, -1.2, yaw, 1.5, -0.7, 2.0)
    np.testing.assert_allclose(pose_from_odometry(odometry_from_pose(pose, Time())), pose, atol=1e-9)


def test_non_finite_or_non_unit_orientation_odometry_is_rejected():
    msg = odometry_from_pose((0.0, 0.0, 0.0, 0.0, 0.0, 0.0), Time())
    msg.twist.twist.linear.x = float("nan")
    assert pose_from_odometry(msg) is None
    msg = odometry_from_pose((0.0, 0.0, 0.0, 0.0, 0.0, 0.0), Time())
    msg.pose.pose.orientation.w = 0.0  # all-zero quaternion
    assert pose_from_odometry(msg) is None


@pytest.mark.parametrize("field, value", [("orientation.x", 1e200), ("orientation.w", 1e308), ("position.x", 1e39),
                                          ("position.y", 5e-324), ("orientation.z", -1e300)])
def test_huge_or_subnormal_odometry_fields_never_raise(field, value):
    """A peer's 1e200 quaternion component once raised OverflowError (q.x**2) and killed the planner."""
    msg = odometry_from_pose((0.0, 0.0, 0.0, 0.0, 0.0, 0.0), Time())
    part, name = field.split(".")
    setattr(getattr(msg.pose.pose, part), name, value)
    pose = pose_from_odometry(msg)
    if value == 5e-324:  # a subnormal position is a valid, tiny one
        assert pose is not None and pose[1] == 5e-324
    else:
        assert pose is None


def test_checked_array_wants_the_size_finite_values_and_a_sane_magnitude():
    np.testing.assert_array_equal(checked_array(Float64MultiArray(data=[1.0, 2.0]), 2), [1.0, 2.0])
    assert checked_array(Float64MultiArray(data=[1.0, 2.0, 3.0]), 2) is None
    assert checked_array(Float64MultiArray(data=[1.0, float("inf")]), 2) is None
    assert checked_array(Float64MultiArray(data=[1.0, 1e39]), 2) is None  # finite float64, inf as float32
    assert checked_array(Float64MultiArray(data=[]), 2) is None


def test_path_and_diagnostics():
    path = path_from_positions(np.array([[0.0, 1.0], [2.0, 3.0]]), Time(sec=1))
    assert [(p.pose.position.x, p.pose.position.y) for p in path.poses] == [(0.0, 1.0), (2.0, 3.0)]
    assert path.header.frame_id == "odom"
    msg = diagnostics(Time(), "/planner: planning", "loop_ros", DiagnosticStatus.WARN, "no model",
                      {"ticks": 3, "p99_ms": 12.345678, "model_version": None})
    assert msg.status[0].level == DiagnosticStatus.WARN and msg.status[0].message == "no model"
    assert diagnostic_values(msg, "/planner: planning") == {"ticks": "3", "p99_ms": "12.35", "model_version": "None"}
    assert diagnostic_values(msg, "/other: planning") is None


def test_a_lock_step_answer_names_the_state_it_answers():
    from loop_ros.core.tasks import make_task
    from loop_ros.nodes.messages import answer, answered_key, array_state, state_key

    task = make_task("gym:Hopper-v5")
    state = array_state(task, np.zeros(task.obs_dim), np.zeros(task.act_dim), 1.0, 7, False)
    assert state_key(state, task) == 7
    msg = answer(np.array([0.1, 0.2, 0.3]), state_key(state, task))
    assert answered_key(msg) == 7 and list(msg.data) == pytest.approx([0.1, 0.2, 0.3])
    assert answered_key(answer(np.zeros(3), None)) is None  # a planner in real time names none
    assert answered_key(Float64MultiArray(data=[0.0, 0.0, 0.0])) is None
    stamped = odometry_from_pose((0.0, 0.0, 0.0, 0.0, 0.0, 0.0), Time(sec=3, nanosec=5))
    assert state_key(stamped, make_task("rc_car")) == 3_000_000_005

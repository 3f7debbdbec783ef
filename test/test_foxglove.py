"""The Foxglove view: the scene built from what the planner sees and plans, and the bridge node
serving it over a real WebSocket from real ROS topics."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from foxglove_client import FoxgloveClient, circle_of, decode_foxglove, entities, free_port, keep_in_radius, xy
from ros_helpers import NodeProcess, Probe, domain_id, params_file

from loop_ros.core.config import SafetyConfig
from loop_ros.nodes.foxglove_scene import numeric_values, scene_update

POSE = np.array([0.8, 0.3, 0.4, 1.0, 0.5, 0.2])  # x, y, yaw, vx_world, vy_world, yaw_rate
PLAN = np.array([[0.8, 0.3], [0.9, 0.45], [0.95, 0.6]])


def test_scene_draws_the_constraints_the_target_the_plan_and_the_car():
    safety = SafetyConfig(keep_in_radius=1.2, obstacles=(0.5, -0.3, 0.2))
    scene = entities(decode_foxglove(scene_update("odom", POSE, PLAN, safety, [(0.0, 0.0, 1.0)])))
    assert {e.frame_id for e in scene.values()} == {"odom"}
    keep_in, obstacle = scene["constraints"].lines
    assert circle_of(xy(keep_in)) == pytest.approx((1.2, 1.2), abs=1e-6)
    assert circle_of(xy(obstacle), (0.5, -0.3)) == pytest.approx((0.2, 0.2), abs=1e-6)
    assert np.allclose(xy(keep_in)[0], xy(keep_in)[-1])  # closed
    assert circle_of(xy(scene["target"].lines[0])) == pytest.approx((1.0, 1.0), abs=1e-6)
    np.testing.assert_allclose(xy(scene["plan"].lines[0]), PLAN, atol=1e-12)
    (car,) = scene["car"].cubes
    assert (car.pose.position.x, car.pose.position.y) == pytest.approx((0.8, 0.3))
    assert (car.pose.orientation.z, car.pose.orientation.w) == pytest.approx((math.sin(0.2), math.cos(0.2)))


def test_scene_before_any_input_and_without_constraints_is_empty():
    scene = entities(decode_foxglove(scene_update("odom", None, None, SafetyConfig(keep_in_radius=0.0), [])))
    assert set(scene) == {"constraints", "target", "plan", "car"}
    assert not any(list(e.lines) + list(e.cubes) for e in scene.values())


def test_diagnostic_values_become_numbers_where_they_are_numbers():
    assert numeric_values({"plan_latency_p99_ms": "6.5", "controller": "arc", "deadline_misses": "0"}) == \
        {"plan_latency_p99_ms": 6.5, "controller": "arc", "deadline_misses": 0.0}


def test_bridge_serves_state_plan_and_the_planners_accepted_geometry_edits(tmp_path):
    from nav_msgs.msg import Odometry, Path
    from rcl_interfaces.msg import ParameterEvent
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_parameter_events
    from std_msgs.msg import Float64MultiArray

    from loop_ros.nodes.messages import float_array, odometry_from_pose, path_from_positions

    port, domain = free_port(), domain_id(14)
    params = params_file(tmp_path / "params.yaml", **{"foxglove.port": port})
    bridge = NodeProcess("foxglove_bridge", "foxglove_bridge", params, domain, tmp_path, summary=tmp_path / "bridge.json")
    client, probe = FoxgloveClient(port), Probe(domain)
    try:
        node = probe.node
        state_pub = node.create_publisher(Odometry, "state", 10)
        plan_pub = node.create_publisher(Path, "plan", 10)
        action_pub = node.create_publisher(Float64MultiArray, "action", 10)
        events_pub = node.create_publisher(ParameterEvent, "/parameter_events", qos_profile_parameter_events)
        publishers = (state_pub, plan_pub, action_pub, events_pub)
        probe.wait_for(lambda: all(p.get_subscription_count() > 0 for p in publishers), 30.0, "the bridge's subscriptions")
        client.wait_for(lambda: client.messages("/scene"), 20.0, "a scene")
        assert keep_in_radius(client.messages("/scene")[-1]) == pytest.approx(1.2, abs=1e-6)  # config/rc_car.yaml

        stamp = node.get_clock().now().to_msg()
        state_pub.publish(odometry_from_pose(POSE, stamp))
        state_pub.publish(odometry_from_pose([math.nan, *POSE[1:]], stamp))  # not shown, counted
        plan_pub.publish(path_from_positions(PLAN, stamp))
        action_pub.publish(float_array([math.nan, 0.0]))  # not shown, counted
        action_pub.publish(float_array([0.2, -0.1]))
        for node_name, radius in (("/planner", 0.9), ("/someone_else", 3.0)):  # only the planner's edits count
            event = ParameterEvent(node=node_name)
            event.changed_parameters = [Parameter("safety.keep_in_radius", value=radius).to_parameter_msg()]
            events_pub.publish(event)
            probe.spin_for(0.3)

        def shown(scene) -> bool:
            car = entities(scene)["car"].cubes
            plan = entities(scene)["plan"].lines
            return (keep_in_radius(scene) == pytest.approx(0.9, abs=1e-6) and len(car) == 1
                    and (car[0].pose.position.x, car[0].pose.position.y) == pytest.approx(POSE[:2])
                    and len(plan) == 1 and np.allclose(xy(plan[0]), PLAN))

        client.wait_for(lambda: any(shown(s) for s in client.messages("/scene")), 10.0, "the state, plan and edit")
        probe.spin_for(0.5)  # later scenes would show a wrongly taken edit
        assert keep_in_radius(client.messages("/scene")[-1]) == pytest.approx(0.9, abs=1e-6)
        (state,) = client.messages("/state")
        assert [state[k] for k in ("x", "y", "yaw", "vx", "vy", "yaw_rate")] == pytest.approx(POSE.tolist())
        assert client.messages("/action") == [{"action": [0.2, -0.1]}]
        (transform,) = client.messages("/tf")
        assert (transform.parent_frame_id, transform.child_frame_id) == ("odom", "base_link")
        assert (transform.translation.x, transform.translation.y) == pytest.approx(POSE[:2])
    finally:
        client.close()
        probe.close()
        code = bridge.stop()
    assert code == 0, bridge.log()[-2000:]
    assert f"ws://127.0.0.1:{port}" in bridge.log()
    summary = json.loads((tmp_path / "bridge.json").read_text())
    assert summary["invalid"] == {"state": 1, "action": 1}
    assert summary["safety_updates"] == 1 and summary["safety"]["keep_in_radius"] == 0.9
    assert summary["sent"]["/state"] == summary["sent"]["/tf"] == 1 and summary["sent"]["/action"] == 1


def test_a_taken_port_is_refused_at_start_with_a_clear_error(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        params = params_file(tmp_path / "params.yaml", **{"foxglove.port": port})
        bridge = NodeProcess("foxglove_bridge", "foxglove_bridge", params, domain_id(15), tmp_path)
        try:
            assert bridge.process.wait(timeout=30) == 2
        finally:
            bridge.stop()
    assert f"foxglove.port: no server on 127.0.0.1:{port}" in bridge.log()


def test_a_task_without_a_pose_shows_its_observation(tmp_path):
    """Array states (a gymnasium task): no body in the scene, the observation as numbers on /state."""
    from std_msgs.msg import Float64MultiArray

    from loop_ros.core.tasks import make_task
    from loop_ros.nodes.messages import array_state

    task = make_task("gym:Hopper-v5")
    port, domain = free_port(), domain_id(16)
    params = params_file(tmp_path / "params.yaml", **{"task.name": task.name, "foxglove.port": port})
    bridge = NodeProcess("foxglove_bridge", "foxglove_bridge", params, domain, tmp_path, summary=tmp_path / "bridge.json")
    client, probe = FoxgloveClient(port), Probe(domain)
    try:
        state_pub = probe.node.create_publisher(Float64MultiArray, "state", 10)
        probe.wait_for(lambda: state_pub.get_subscription_count() > 0, 30.0, "the bridge's subscription")
        client.wait_for(lambda: client.messages("/scene"), 20.0, "a scene")
        obs = np.linspace(-1.0, 1.0, task.obs_dim)
        state_pub.publish(array_state(task, obs, np.zeros(task.act_dim), 1.0, 4, False))
        state_pub.publish(Float64MultiArray(data=[math.nan] * task.obs_dim))  # wrong size and not finite: counted
        client.wait_for(lambda: client.messages("/state"), 10.0, "the observation")
        (shown,) = client.messages("/state")
        assert shown["observation"] == pytest.approx(obs.tolist())
        assert entities(client.messages("/scene")[-1])["car"].cubes == []
    finally:
        client.close()
        probe.close()
        code = bridge.stop()
    assert code == 0, bridge.log()[-2000:]
    assert json.loads((tmp_path / "bridge.json").read_text())["invalid"] == {"state": 1}

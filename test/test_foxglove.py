"""The Foxglove view: the scene built from what the planner sees and plans, the bridge node serving
it over a real WebSocket from real ROS topics (every channel with a schema), through its lifecycle,
and the planner's parameters listed and edited from a Foxglove client, the planner deciding."""
from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import pytest
from foxglove_client import (FoxgloveClient, circle_of, decode_foxglove, entities, free_port, keep_in_radius,
                             layout_paths, recorded_messages, schema_fields, xy)
from ros_helpers import REPO, ROS_ENV, NodeProcess, Probe, domain_id, params_file

from loop_ros.core.config import SafetyConfig
from loop_ros.nodes.foxglove_scene import numeric_values, scene_update

POSE = np.array([0.8, 0.3, 0.4, 1.0, 0.5, 0.2])  # x, y, yaw, vx_world, vy_world, yaw_rate
PLAN = np.array([[0.8, 0.3], [0.9, 0.45], [0.95, 0.6]])
STAMP_NS = 1_700_000_000_250_000_000
LAYOUT = REPO / "config" / "foxglove_layout.json"


def test_scene_draws_the_constraints_the_target_the_plan_and_the_car():
    safety = SafetyConfig(keep_in_radius=1.2, obstacles=(0.5, -0.3, 0.2))
    scene = entities(decode_foxglove(scene_update("odom", STAMP_NS, POSE, PLAN, safety, [(0.0, 0.0, 1.0)])))
    assert {e.frame_id for e in scene.values()} == {"odom"}
    assert {(e.timestamp.seconds, e.timestamp.nanos) for e in scene.values()} == {(1_700_000_000, 250_000_000)}
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
    scene = entities(decode_foxglove(scene_update("odom", STAMP_NS, None, None, SafetyConfig(keep_in_radius=0.0), [])))
    assert set(scene) == {"constraints", "target", "plan", "car"}
    assert not any(list(e.lines) + list(e.cubes) for e in scene.values())


def test_diagnostic_values_become_numbers_where_they_are_numbers():
    assert numeric_values({"plan_latency_p99_ms": "6.5", "controller": "arc", "deadline_misses": "0"}) == \
        {"plan_latency_p99_ms": 6.5, "controller": "arc", "deadline_misses": 0.0}
    # no figure yet, or not finite: null (JSON has no NaN, and Foxglove refuses a message holding one)
    assert numeric_values({"n_feasible": "None", "ratio": "nan", "peak": "inf"}) == \
        {"n_feasible": None, "ratio": None, "peak": None}


def test_parameter_values_cross_between_ros_and_foxglove():
    from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, ParameterType, ParameterValue

    from loop_ros.nodes.foxglove_parameters import description_record, foxglove_parameter, ros_value

    double = foxglove_parameter("safety.d0", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=2.0))
    assert double.get_value() == 2.0 and double.type.name == "Float64"  # stays a float on the wire
    unset = foxglove_parameter("x", ParameterValue())
    assert unset.value is None
    # JSON cannot tell 2 from 2.0, nor type an empty list: the planner's declared type decides
    assert ros_value(2, ParameterType.PARAMETER_DOUBLE) == \
        ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=2.0)
    assert ros_value([1, 2.5, 3], ParameterType.PARAMETER_DOUBLE_ARRAY).double_array_value.tolist() == [1.0, 2.5, 3.0]
    assert ros_value([], ParameterType.PARAMETER_DOUBLE_ARRAY) == ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY)
    # else its own type, for the planner to refuse
    assert ros_value("far", ParameterType.PARAMETER_DOUBLE).type == ParameterType.PARAMETER_STRING
    assert ros_value(True, ParameterType.PARAMETER_INTEGER).type == ParameterType.PARAMETER_BOOL
    with pytest.raises(TypeError):
        ros_value({"a": 1}, ParameterType.PARAMETER_DOUBLE)
    # what Foxglove's Parameter cannot carry, for the descriptions channel
    descriptor = ParameterDescriptor(type=ParameterType.PARAMETER_DOUBLE, description="radius (m)", read_only=True,
                                     floating_point_range=[FloatingPointRange(from_value=0.0, to_value=5.0, step=0.5)])
    assert description_record("safety.r", descriptor) == {
        "name": "safety.r", "type": "double", "description": "radius (m)", "read_only": True,
        "additional_constraints": "", "floating_point_range": {"from_value": 0.0, "to_value": 5.0, "step": 0.5},
        "integer_range": None}


def test_the_shipped_layout_is_a_foxglove_layout_of_the_bridges_panels():
    layout = json.loads(LAYOUT.read_text())

    def panel_ids(node) -> list[str]:
        return [node] if isinstance(node, str) else panel_ids(node["first"]) + panel_ids(node["second"])

    assert sorted(panel_ids(layout["layout"])) == sorted(layout["configById"])
    kinds = {panel_id.split("!")[0] for panel_id in layout["configById"]}
    assert {"3D", "Plot", "Parameters"} <= kinds
    plotted = {path for panel_id, config in layout["configById"].items() if panel_id.startswith("Plot!")
               for path in (series["value"] for series in config["paths"])}
    for field in ("plan_latency_p99_ms", "deadline_misses", "n_feasible"):
        assert f"/diagnostics/planner/planning.{field}" in plotted
    assert "/state.speed" in plotted
    assert "/scene" in layout_paths(layout)


def test_bridge_serves_state_plan_and_the_planners_accepted_geometry_edits(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry, Path
    from rcl_interfaces.msg import ParameterEvent, ParameterValue
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_parameter_events
    from std_msgs.msg import Float64MultiArray, String

    from loop_ros.nodes.messages import diagnostics, float_array, odometry_from_pose, path_from_positions

    port, domain = free_port(), domain_id(14)
    params = params_file(tmp_path / "params.yaml", **{"foxglove.port": port})
    bridge = NodeProcess("foxglove_bridge", "foxglove_bridge", params, domain, tmp_path, summary=tmp_path / "bridge.json")
    client, probe = FoxgloveClient(port), Probe(domain)
    try:
        node = probe.node
        state_pub = node.create_publisher(Odometry, "state", 10)
        plan_pub = node.create_publisher(Path, "plan", 10)
        action_pub = node.create_publisher(Float64MultiArray, "action", 10)
        episode_pub = node.create_publisher(String, "episode", 10)
        diagnostics_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        events_pub = node.create_publisher(ParameterEvent, "/parameter_events", qos_profile_parameter_events)
        publishers = (state_pub, plan_pub, action_pub, episode_pub, diagnostics_pub, events_pub)
        probe.wait_for(lambda: all(p.get_subscription_count() > 0 for p in publishers), 30.0, "the bridge's subscriptions")
        client.wait_for(lambda: client.messages("/scene"), 20.0, "a scene")
        probe.spin_for(1.0)  # our writers matched its readers; on busy cores its readers took longer to match ours
        assert keep_in_radius(client.messages("/scene")[-1]) == pytest.approx(1.2, abs=1e-6)  # config/rc_car.yaml
        assert all(e.timestamp.seconds > 0 for e in client.messages("/scene")[-1].entities)  # stamped

        stamp = node.get_clock().now().to_msg()
        state_pub.publish(odometry_from_pose(POSE, stamp))
        state_pub.publish(odometry_from_pose([math.nan, *POSE[1:]], stamp))  # not shown, counted
        plan_pub.publish(path_from_positions(PLAN, stamp))
        action_pub.publish(float_array([math.nan, 0.0]))  # not shown, counted
        action_pub.publish(float_array([0.2, -0.1]))
        episode_pub.publish(String(data='{"episode": 0, "return": NaN}'))  # JSON without NaN for Foxglove: counted
        episode_pub.publish(String(data='{"episode": 0, "return": 12.5, "violations": 3}'))
        # The planner declares safety.obstacles (an empty list) unset, then sets it: the unset
        # announcement is no edit (it was logged as "'NoneType' object is not iterable").
        declared = ParameterEvent(node="/planner")
        declared.new_parameters = [ParameterMsg(name="safety.obstacles", value=ParameterValue())]
        events_pub.publish(declared)
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

        def diagnostics_shown() -> list:
            # again and again, as a node does: the first message on a new channel goes out before
            # the client has subscribed to it
            diagnostics_pub.publish(diagnostics(stamp, "/planner: planning", "loop_ros", b"\x00", "planning",
                                                {"plan_latency_p99_ms": 6.5, "n_feasible": None, "controller": "arc"}))
            probe.spin_for(0.1)
            return client.messages("/diagnostics/planner/planning")

        client.wait_for(diagnostics_shown, 10.0, "the diagnostics")
        probe.spin_for(0.5)  # later scenes would show a wrongly taken edit
        assert keep_in_radius(client.messages("/scene")[-1]) == pytest.approx(0.9, abs=1e-6)
        (state,) = client.messages("/state")
        assert [state[k] for k in ("x", "y", "yaw", "vx", "vy", "yaw_rate")] == pytest.approx(POSE.tolist())
        assert client.messages("/action") == [{"action": [0.2, -0.1]}]
        assert client.messages("/episode") == [{"episode": 0, "return": 12.5, "violations": 3}]
        assert client.messages("/diagnostics/planner/planning")[-1] == \
            {"level": 0, "message": "planning", "plan_latency_p99_ms": 6.5, "n_feasible": None, "controller": "arc"}
        (transform,) = client.messages("/tf")
        assert (transform.parent_frame_id, transform.child_frame_id) == ("odom", "base_link")
        assert (transform.translation.x, transform.translation.y) == pytest.approx(POSE[:2])
        # every channel has a schema of its own that lists the fields a message carries
        channels = {c["topic"]: c for c in client.advertised()}
        assert {"/scene", "/tf", "/state", "/action", "/episode", "/planner/parameter_descriptions",
                "/diagnostics/planner/planning"} <= set(channels)
        fields = {topic: schema_fields(channel) for topic, channel in channels.items()}
        assert len({c["schemaName"] for c in channels.values()}) == len(channels)
        assert set(state) == fields["/state"] and fields["/action"] == {"action"}
        assert {"episode", "return", "violations"} <= fields["/episode"]
        assert set(client.messages("/diagnostics/planner/planning")[0]) == fields["/diagnostics/planner/planning"]
        diagnostics_schema = json.loads(channels["/diagnostics/planner/planning"]["schema"])["properties"]
        assert diagnostics_schema["n_feasible"]["type"] == "number" and diagnostics_schema["controller"]["type"] == "string"
    finally:
        client.close()
        probe.close()
        code = bridge.stop()
    assert code == 0, bridge.log()[-2000:]
    assert f"ws://127.0.0.1:{port}" in bridge.log()
    assert "NoneType" not in bridge.log()
    summary = json.loads((tmp_path / "bridge.json").read_text())
    assert summary["invalid"] == {"state": 1, "action": 1, "episode": 1}
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
        probe.spin_for(1.0)  # its reader matching our writer (see the test above)
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


def test_the_planners_parameters_are_listed_and_edited_from_foxglove_the_planner_deciding(tmp_path):
    """A real planner and bridge: a client lists the planner's parameters (descriptions on their
    channel), sets safety.keep_in_radius (the planner takes it, the scene follows), and edits the
    planner refuses (an invalid value, a wrong type, a read-only and an unknown parameter) change
    nothing there and come back unchanged, the planner's reason shown to the client."""
    from rclpy.parameter import Parameter, parameter_value_to_python

    from loop_ros.core.params_file import field_docs

    port, domain = free_port(), domain_id(17)
    params = params_file(tmp_path / "params.yaml", **{"foxglove.port": port, "task.bundle": str(tmp_path / "no_bundle")})
    bridge = NodeProcess("foxglove_bridge", "foxglove_bridge", params, domain, tmp_path, summary=tmp_path / "bridge.json")
    planner = NodeProcess("planner", "planner", params, domain, tmp_path)
    client, probe = FoxgloveClient(port), Probe(domain)
    try:
        listed = client.wait_for(client.get_parameters, 60.0, "the planner's parameters")
        assert listed["safety.keep_in_radius"] == {"name": "safety.keep_in_radius", "type": "float64", "value": 1.2}
        assert listed["task.name"]["value"] == "rc_car" and listed["safety.obstacles"]["value"] == []
        described = client.wait_for(lambda: client.messages("/planner/parameter_descriptions"), 10.0, "descriptions")
        records = {r["name"]: r for r in described[-1]["parameters"]}
        assert described[-1]["node"] == "/planner" and set(records) == set(listed)
        assert records["safety.keep_in_radius"]["description"] == field_docs("safety")["keep_in_radius"]
        assert records["safety.keep_in_radius"]["type"] == "double"
        assert records["task.name"]["read_only"] and not records["safety.keep_in_radius"]["read_only"]

        remote = probe.parameter_client("/planner")

        def planner_value(name: str):
            return parameter_value_to_python(probe.call(remote.get_parameters([name])).values[0])

        assert client.set_parameters({"safety.keep_in_radius": 1.5}) == {"safety.keep_in_radius": 1.5}
        assert planner_value("safety.keep_in_radius") == 1.5
        client.wait_for(lambda: keep_in_radius(client.messages("/scene")[-1]) == pytest.approx(1.5, abs=1e-6),
                        10.0, "the scene's keep-in circle of 1.5 m")
        # a whole number for a float parameter is the float (JSON cannot tell them apart)
        assert client.set_parameters({"safety.keep_in_radius": 2}) == {"safety.keep_in_radius": 2.0}
        assert planner_value("safety.keep_in_radius") == 2.0
        assert not client.errors("refused")

        refusals = {"safety.d0": (-1.0, "safety.d0 must be >= 0"), "safety.keep_in_radius": ("far", "Wrong parameter type"),
                    "task.name": ("point_mass", "read-only"), "no.such_parameter": (1.0, "undeclared")}
        assert client.set_parameters({name: value for name, (value, _) in refusals.items()}) == \
            {"safety.d0": 0.0, "safety.keep_in_radius": 2.0, "task.name": "rc_car"}  # unchanged
        errors = client.wait_for(lambda: len(client.errors("refused")) >= 4 and client.errors("refused"), 10.0, "refusals")
        for name, (_, reason) in refusals.items():
            (error,) = [e for e in errors if f"refused {name} " in e]
            assert reason in error, error
        assert [planner_value(name) for name in ("safety.d0", "safety.keep_in_radius", "task.name")] == [0.0, 2.0, "rc_car"]

        # an accepted edit clears the refusal shown for the parameter
        assert client.set_parameters({"safety.keep_in_radius": 1.6}) == {"safety.keep_in_radius": 1.6}
        client.wait_for(lambda: any("parameter safety.keep_in_radius" in r["statusIds"] for r in client.replies("removeStatus")),
                        10.0, "the refusal of safety.keep_in_radius cleared")

        # an edit made elsewhere reaches a client that watches the parameter
        client.send("subscribeParameterUpdates", parameterNames=["safety.keep_in_radius"])
        probe.spin_for(0.5)
        assert probe.call(remote.set_parameters([Parameter("safety.keep_in_radius", value=1.8)])).results[0].successful
        client.wait_for(lambda: {"name": "safety.keep_in_radius", "type": "float64", "value": 1.8} in
                        [p for r in client.replies("parameterValues") if "id" not in r for p in r["parameters"]],
                        10.0, "the update of safety.keep_in_radius")

        # the layout's plots read fields the bridge's channels have
        client.wait_for(lambda: "/diagnostics/planner/planning" in client.topics(), 10.0, "the planner's diagnostics")
        channels = {c["topic"]: schema_fields(c) for c in client.advertised()}
        for path in layout_paths(json.loads(LAYOUT.read_text())):
            topic, _, field = path.partition(".")
            assert topic in channels and (not field or field in channels[topic]), path
    finally:
        client.close()
        probe.close()
        planner_code, code = planner.stop(), bridge.stop()
    assert code == 0 and planner_code == 0, bridge.log()[-2000:] + planner.log()[-2000:]
    summary = json.loads((tmp_path / "bridge.json").read_text())
    assert summary["parameter_requests"]["refused"] == 4 and summary["callback_errors"] == {}
    assert summary["safety"]["keep_in_radius"] == 1.8 and summary["invalid"] == {}


def test_without_an_answering_planner_parameter_requests_fail_in_bounded_time(tmp_path):
    """No planner: refused at once; a planner whose services exist but never answer (a node of
    this test that is never spun): refused after the bridge's timeout. The bridge serves on, and
    a deactivation does not wait for a request in progress."""
    import time

    import rclpy
    from lifecycle_msgs.msg import Transition

    from loop_ros.nodes.foxglove_bridge import PLANNER_TIMEOUT_S
    from loop_ros.nodes.lifecycle_manager import LifecycleClient

    port, domain = free_port(), domain_id(18)
    params = params_file(tmp_path / "params.yaml", **{"foxglove.port": port})
    bridge = NodeProcess("foxglove_bridge", "foxglove_bridge", params, domain, tmp_path, summary=tmp_path / "bridge.json")
    client, probe = FoxgloveClient(port), Probe(domain)
    try:
        client.wait_for(lambda: client.messages("/scene"), 20.0, "a scene")
        assert client.get_parameters(timeout_s=1.0) == {}
        assert client.errors("/planner/list_parameters is not available")
        hung = rclpy.create_node("planner", context=probe.context)  # its parameter services, never served
        try:
            def timed_out() -> bool:
                started = time.monotonic()
                assert client.set_parameters({"safety.d0": 0.1}) == {}
                return client.errors("no answer from /planner/") and time.monotonic() - started < PLANNER_TIMEOUT_S + 2.0
            client.wait_for(timed_out, 30.0, "a request timed out")
            scenes = len(client.messages("/scene"))
            client.wait_for(lambda: len(client.messages("/scene")) > scenes + 5, 5.0, "more scenes")
            # deactivating stops the server, which waits for the request in progress: that one ends at once
            lifecycle = LifecycleClient(probe.node, probe.executor, "/foxglove_bridge")
            assert lifecycle.wait(10.0)
            client.request("getParameters", parameterNames=[])
            time.sleep(0.2)
            started = time.monotonic()
            assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE, 10.0)
            assert time.monotonic() - started < 0.5 * PLANNER_TIMEOUT_S
        finally:
            hung.destroy_node()
    finally:
        client.close()
        probe.close()
        code = bridge.stop()
    assert code == 0, bridge.log()[-2000:]
    summary = json.loads((tmp_path / "bridge.json").read_text())
    assert summary["parameter_requests"]["failed"] >= 3 and summary["callback_errors"] == {}


def test_the_bridge_serves_only_while_active_and_configures_again_after_a_cleanup(tmp_path):
    """Configured: no server; active: serving; deactivated: the connection closed; cleaned up and
    configured again: serving again on the port, with nothing left of the earlier configuration."""
    from diagnostic_msgs.msg import DiagnosticArray
    from lifecycle_msgs.msg import State, Transition

    from loop_ros.nodes.lifecycle_manager import LifecycleClient
    from loop_ros.nodes.messages import diagnostics

    port, domain = free_port(), domain_id(19)
    params = params_file(tmp_path / "params.yaml", **{"foxglove.port": port})
    bridge = NodeProcess("foxglove_bridge", "foxglove_bridge", params, domain, tmp_path,
                         summary=tmp_path / "bridge.json", ros_args=("-p", "autostart:=false"))
    probe, clients = Probe(domain), []
    try:
        lifecycle = LifecycleClient(probe.node, probe.executor, "/foxglove_bridge")
        assert lifecycle.wait(60.0), "no lifecycle services of the bridge"

        def change(transition: int, expected: int) -> None:
            assert lifecycle.transition(transition, 30.0) and lifecycle.state() == expected, transition

        def serving() -> FoxgloveClient:
            clients.append(FoxgloveClient(port, connect_timeout_s=10.0))
            clients[-1].wait_for(lambda: clients[-1].messages("/scene"), 20.0, "a scene")
            return clients[-1]

        diagnostics_pub = probe.node.create_publisher(DiagnosticArray, "/diagnostics", 10)

        def diagnostics_advertised(client: FoxgloveClient) -> bool:
            diagnostics_pub.publish(diagnostics(probe.node.get_clock().now().to_msg(), "/planner: planning",
                                                "loop_ros", b"\x00", "planning", {"n_feasible": 3}))
            probe.spin_for(0.1)
            return "/diagnostics/planner/planning" in client.topics()

        change(Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE)
        clients.append(FoxgloveClient(port, connect_timeout_s=1.0))
        clients[-1].wait_for(lambda: clients[-1].finished() and isinstance(clients[-1].error, ConnectionRefusedError),
                             5.0, "the connection refused while inactive")
        for cleaned_up in (False, True):
            change(Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE)
            served = serving()
            # the SDK keeps a channel until it is closed: after a cleanup, none of the earlier configuration's
            assert "/diagnostics/planner/planning" not in served.topics()
            served.wait_for(lambda: diagnostics_advertised(served), 10.0, "a diagnostics channel")
            change(Transition.TRANSITION_DEACTIVATE, State.PRIMARY_STATE_INACTIVE)
            served.wait_for(served.finished, 5.0, "the server closing the connection")
            if not cleaned_up:
                change(Transition.TRANSITION_CLEANUP, State.PRIMARY_STATE_UNCONFIGURED)
                change(Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE)
    finally:
        for client in clients:
            client.close()
        probe.close()
        code = bridge.stop()
    assert code == 0, bridge.log()[-2000:]
    summary = json.loads((tmp_path / "bridge.json").read_text())
    assert summary["port"] == port and summary["sent"]["/scene"] > 0 and summary["callback_errors"] == {}


@contextlib.contextmanager
def recording_bridge(tmp_path, record, domain: int):
    """A bridge recording to ``record`` and a probe on its domain; both stopped on leaving."""
    params = params_file(tmp_path / "params.yaml", **{"foxglove.port": 0, "foxglove.record": str(record)})
    bridge = NodeProcess("foxglove_bridge", "foxglove_bridge", params, domain, tmp_path, summary=tmp_path / "bridge.json")
    probe = Probe(domain)
    try:
        yield bridge, probe, params
    finally:
        probe.close()
        bridge.stop()


def test_the_view_is_recorded_to_an_mcap_file_that_is_never_overwritten(tmp_path):
    """foxglove.record: what the bridge serves also goes to the file (every channel, the same messages),
    which is finished when the node stops; a second bridge on the same file refuses to start."""
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry

    from loop_ros.nodes.messages import diagnostics, odometry_from_pose

    record, domain = tmp_path / "views" / "run.mcap", domain_id(24)  # its folder is created
    with recording_bridge(tmp_path, record, domain) as (bridge, probe, params):
        state_pub = probe.node.create_publisher(Odometry, "state", 10)
        diagnostics_pub = probe.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        probe.wait_for(lambda: state_pub.get_subscription_count() and diagnostics_pub.get_subscription_count(), 30.0,
                       "the bridge's subscriptions")
        for _ in range(20):
            stamp = probe.node.get_clock().now().to_msg()
            state_pub.publish(odometry_from_pose(POSE, stamp))
            diagnostics_pub.publish(diagnostics(stamp, "/planner: planning", "loop_ros", b"\x00", "planning",
                                                {"n_feasible": 3}))
            probe.spin_for(0.1)
    assert bridge.process.returncode == 0, bridge.log()[-2000:]
    summary = json.loads((tmp_path / "bridge.json").read_text())
    recorded = recorded_messages(record)
    assert summary["recorded_to"] == str(record)
    assert summary["sent"]["/state"] > 0 and summary["sent"]["/diagnostics/planner/planning"] > 0
    assert {topic: len(messages) for topic, messages in recorded.items()} == summary["sent"]
    assert json.loads(recorded["/state"][-1])["x"] == pytest.approx(POSE[0])
    assert json.loads(recorded["/diagnostics/planner/planning"][-1])["n_feasible"] == 3

    before = record.read_bytes()
    again = NodeProcess("foxglove_bridge", "foxglove_bridge", params, domain, tmp_path)
    try:
        assert again.process.wait(timeout=30) == 2
    finally:
        again.stop()
    assert f"foxglove.record: cannot record to {record}" in again.log() and "File exists" in again.log()
    assert record.read_bytes() == before


def test_a_recording_ends_before_its_disk_is_full_and_the_view_goes_on(tmp_path):
    """A disk with less than RECORD_MIN_FREE_BYTES free: the bridge ends its recording (a finished
    file, the reason in its log and summary) and goes on serving, also after a cleanup and configure
    (the recording stays ended); it exits 0."""
    import subprocess

    from lifecycle_msgs.msg import State, Transition
    from nav_msgs.msg import Odometry

    from loop_ros.nodes.foxglove_bridge import RECORD_CHECK_S
    from loop_ros.nodes.lifecycle_manager import LifecycleClient
    from loop_ros.nodes.messages import odometry_from_pose

    disk = tmp_path / "small_disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with recording_bridge(tmp_path, disk / "v.mcap", domain_id(25)) as (bridge, probe, _):
            state_pub = probe.node.create_publisher(Odometry, "state", 10)
            probe.wait_for(lambda: state_pub.get_subscription_count() > 0, 30.0, "the bridge's subscription")
            probe.wait_for(lambda: "ended: " in bridge.log(), 10 * RECORD_CHECK_S + 20.0, "the recording to end")
            lifecycle = LifecycleClient(probe.node, probe.executor, "/foxglove_bridge")
            for transition, state in ((Transition.TRANSITION_DEACTIVATE, State.PRIMARY_STATE_INACTIVE),
                                      (Transition.TRANSITION_CLEANUP, State.PRIMARY_STATE_UNCONFIGURED),
                                      (Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE),
                                      (Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE)):
                assert lifecycle.transition(transition, 30.0) and lifecycle.state() == state, bridge.log()[-2000:]
            probe.wait_for(lambda: state_pub.get_subscription_count() > 0, 30.0, "the bridge's subscription again")
            for _ in range(10):  # served again, without the recording
                state_pub.publish(odometry_from_pose(POSE, probe.node.get_clock().now().to_msg()))
                probe.spin_for(0.1)
        assert bridge.process.returncode == 0, bridge.log()[-2000:]
        summary = json.loads((tmp_path / "bridge.json").read_text())
        assert "MB left on its disk" in summary["record_stopped"] and summary["sent"]["/state"] > 0
        recorded_messages(disk / "v.mcap")  # finished: it was closed while there was room
        assert bridge.log().count("ended: ") == 1
    finally:
        subprocess.run(["umount", "--lazy", str(disk)])  # --lazy: detached even if something still holds it


def test_a_failed_write_ends_the_recording_without_raising(monkeypatch):
    """The SDK's writer fails (flush and close raise, as on a full disk): the recording ends with the
    reason, once, and nothing raises out of the timer's callback; a close that fails at shutdown is
    reported before the summary is taken."""
    import rclpy

    from loop_ros.nodes.foxglove_bridge import FoxgloveBridgeNode

    class FailedWriter:
        closed = 0

        def flush(self):
            raise RuntimeError("FoxgloveError: MCAP error: No space left on device")

        def close(self):
            self.closed += 1
            raise RuntimeError("FoxgloveError: MCAP error: attempted another write after a write method failed")

    for key, value in ROS_ENV.items():  # read when the context's DDS participant is created
        monkeypatch.setenv(key, value)
    rclpy.init(args=[], domain_id=domain_id(26))
    try:
        node = FoxgloveBridgeNode()  # never configured: the check alone
        writer = FailedWriter()
        node.recording, node.recorded_to = writer, "/tmp/view.mcap"
        node._check_recording()
        node._check_recording()
        assert node.recording is None and writer.closed == 1
        assert node.record_stopped.startswith("FoxgloveError: MCAP error: No space left on device; FoxgloveError")

        node.recording, node.record_stopped = FailedWriter(), None  # a write failed after the last check
        node.trigger_shutdown()
        assert node.recording is None and node.record_stopped.startswith("closing it; FoxgloveError")
        node.destroy_node()
    finally:
        rclpy.try_shutdown()

"""The planner's answer to bad inputs, with this test process as the sim: NaN, non-unit
quaternion and wrong-size states, and states that stop coming, all give the safe action
and a counted diagnostic; valid states bring planning back."""
from __future__ import annotations

import math
import shutil
import time

import numpy as np
import pytest
from ros_helpers import BUNDLE_VERSION, NodeProcess, Probe, domain_id, export_test_bundle, params_file

SAFE_ACTION = [0.0, 0.0]  # RcCarTask / PointMassTask safe action
SETTLE_S = 0.15  # > one tick + DDS latency: actions received later answer the new kind of state


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A car planner (Odometry states, test bundle) and a point-mass planner (array states, no
    bundle, namespace /mass) on one domain, and a probe there."""
    tmp = tmp_path_factory.mktemp("inputs")
    domain = domain_id(2)
    car = params_file(tmp / "car.yaml", **{"task.bundle": str(export_test_bundle(tmp / "bundle"))})
    mass = params_file(tmp / "mass.yaml", **{"task.name": "point_mass", "task.bundle": str(tmp / "no_bundle")})
    nodes = [NodeProcess("planner", "planner", car, domain, tmp),
             NodeProcess("planner", "mass_planner", mass, domain, tmp, ros_args=("-r", "__ns:=/mass"))]
    probe = Probe(domain)
    yield probe, tmp
    probe.close()
    for node in nodes:
        assert node.stop() == 0, node.log()


class StatePublisher:
    """Publishes ``self.message`` (None: nothing) on ``topic`` at 50 Hz and timestamps the actions."""

    def __init__(self, probe, msg_type, topic: str, action_topic: str):
        from std_msgs.msg import Float64MultiArray

        self.message = None
        publisher = probe.node.create_publisher(msg_type, topic, 10)
        probe.node.create_timer(0.02, lambda: self.message is not None and publisher.publish(self.message))
        self.actions: list[tuple[float, list[float]]] = []
        probe.node.create_subscription(Float64MultiArray, action_topic,
                                       lambda m: self.actions.append((time.monotonic(), list(m.data))), 10)

    def actions_after(self, probe, message, seconds: float) -> list[list[float]]:
        """Switch to ``message``, spin ``seconds``; the actions received after the switch settled."""
        self.message = message
        start = time.monotonic()
        probe.spin_for(seconds)
        return [a for t, a in self.actions if t > start + SETTLE_S]


def odometry(x=1.0, yaw=math.pi / 2, qz=None):
    from loop_ros.nodes.messages import odometry_from_pose

    from builtin_interfaces.msg import Time

    msg = odometry_from_pose((x, 0.0, yaw, 0.0, 1.0, 0.0), stamp=Time())
    if qz is not None:
        msg.pose.pose.orientation.z = qz
    return msg


def counter(diagnostics, key: str) -> int:
    return int(diagnostics[-1][key]) if diagnostics else 0


def test_invalid_and_stale_odometry_give_the_safe_action_and_are_counted(setup):
    from nav_msgs.msg import Odometry

    probe, tmp = setup
    states = StatePublisher(probe, Odometry, "state", "action")
    diagnostics = probe.diagnostics("/planner")
    states.message = odometry()
    probe.wait_for(lambda: diagnostics and diagnostics[-1]["model_version"] == str(BUNDLE_VERSION)
                   and int(diagnostics[-1]["plans"]) > 0, 20.0, "the planner to plan")

    planned = states.actions_after(probe, odometry(), 0.5)
    assert planned and all(a != SAFE_ACTION for a in planned)  # the random actor/plan never gives exactly 0

    for bad in (odometry(x=float("nan")), odometry(qz=0.0)):  # NaN position; quaternion of norm 0.71
        before = counter(diagnostics, "invalid_states")
        answered = states.actions_after(probe, bad, 0.5)
        assert answered and all(a == SAFE_ACTION for a in answered)
        probe.wait_for(lambda: counter(diagnostics, "invalid_states") >= before + 20, 3.0,
                       "the invalid states counted in the diagnostics")

    assert all(a != SAFE_ACTION for a in states.actions_after(probe, odometry(), 0.5))

    stale_before = counter(diagnostics, "stale_states")
    states.message, stopped = None, time.monotonic()
    probe.spin_for(0.6)
    timeout_s = 0.1  # task.state_timeout_s in config/rc_car.yaml
    late = [a for t, a in states.actions if t > stopped + timeout_s + SETTLE_S]
    assert late and all(a == SAFE_ACTION for a in late)
    probe.wait_for(lambda: counter(diagnostics, "stale_states") > stale_before, 3.0, "stale states counted")
    probe.wait_for(lambda: "stale state: the latest is" in (tmp / "planner.log").read_text(), 3.0,
                   "a log line for the run of stale ticks")


def test_wrong_size_array_states_give_the_safe_action_and_are_counted(setup):
    from std_msgs.msg import Float64MultiArray

    probe, _ = setup
    states = StatePublisher(probe, Float64MultiArray, "/mass/state", "/mass/action")
    diagnostics = probe.diagnostics("/mass/mass_planner")
    wrong_size = Float64MultiArray(data=[0.0, 0.0, 0.0])  # the point mass state has 4 values
    answered = states.actions_after(probe, wrong_size, 1.0)
    assert answered and all(a == SAFE_ACTION for a in answered)
    probe.wait_for(lambda: counter(diagnostics, "invalid_states") >= 25, 3.0, "wrong-size states counted")
    assert int(diagnostics[-1]["invalid_state_ticks"]) > 0

    valid = states.actions_after(probe, Float64MultiArray(data=[0.0, 0.0, 0.0, 0.0]), 1.0)
    assert valid and all(a == SAFE_ACTION for a in valid)  # no bundle for the point mass: safe action
    seen = len(diagnostics)
    probe.wait_for(lambda: len(diagnostics) >= seen + 2, 3.0, "two more diagnostics")
    assert diagnostics[-1]["invalid_states"] == diagnostics[-2]["invalid_states"]  # valid ones are not counted
    assert counter(diagnostics, "no_model_ticks") > 0
    assert diagnostics[-1]["model_status"].startswith("no model")
    assert np.isfinite(float(diagnostics[-1]["achieved_hz"]))


def test_a_bad_bundle_is_rejected_and_the_old_model_keeps_planning(setup):
    from nav_msgs.msg import Odometry
    from rclpy.parameter import Parameter

    probe, tmp = setup
    corrupt = tmp / "corrupt"
    shutil.copytree(tmp / "bundle", corrupt)
    (corrupt / "dynamics.onnx").write_bytes(b"not an onnx graph")
    states = StatePublisher(probe, Odometry, "state", "action")
    states.message = odometry()
    car, mass = probe.diagnostics("/planner"), probe.diagnostics("/mass/mass_planner")
    for node, bundle in (("/planner", corrupt), ("/mass/mass_planner", tmp / "bundle")):  # sha256; task
        results = probe.call(probe.parameter_client(node).set_parameters(
            [Parameter("task.bundle", value=str(bundle))])).results
        assert results[0].successful, results[0].reason
    probe.wait_for(lambda: car and car[-1]["bundle_errors"] == "1" and mass and mass[-1]["bundle_errors"] == "1",
                   10.0, "both bundles rejected")
    assert "sha256 mismatch for dynamics.onnx" in car[-1]["bundle_last_error"]
    assert "bundle task is 'rc_car', expected 'point_mass'" in mass[-1]["bundle_last_error"]
    assert mass[-1]["model_version"] == "None" and mass[-1]["model_status"].startswith("no model")
    plans = int(car[-1]["plans"])
    probe.wait_for(lambda: int(car[-1]["plans"]) > plans, 5.0, "the car planner to go on planning")
    assert car[-1]["model_version"] == str(BUNDLE_VERSION)

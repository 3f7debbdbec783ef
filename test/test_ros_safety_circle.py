"""With the shipped trained bundle, safeARC keeps the car inside a keep-in circle edited live.

Lock-step (the sim steps when the plan on its state has come): the claim is the planner's. On a
loaded CPU a real-time run plans late (35-80 ms a plan with a second process spinning on one of two
cores), and the delay alone can take the car out (1 of 16 such runs, bench/RESULTS.md "A late plan
goes on"). What a real-time run does is measured with ``loop-ros up``, not asserted here.
"""
from __future__ import annotations

import numpy as np
import pytest
from ros_helpers import REPO, NodeProcess, Probe, domain_id, params_file

MANIFEST = REPO / "models" / "rc_car" / "manifest.json"
NEW_RADIUS = 1.1  # tighter than the YAML's 1.2; the task's circle is 1 m
RECORD_STEPS = 500  # 10 s of the car's time, one episode's length
SETTLE_STEPS = 50  # one second at 50 Hz

pytestmark = pytest.mark.skipif(not MANIFEST.exists(),
                                reason="needs the trained bundle models/rc_car/ (no manifest.json yet)")


def test_the_car_stays_inside_a_tightened_circle_under_safe_arc(tmp_path):
    from nav_msgs.msg import Odometry
    from rclpy.parameter import Parameter

    domain = domain_id(6)
    params = params_file(tmp_path / "params.yaml", **{"task.bundle": str(MANIFEST.parent), "safety.enabled": True,
                                                                "task.lockstep": True})
    nodes = [NodeProcess(name, name, params, domain, tmp_path) for name in ("sim", "planner")]
    probe = Probe(domain)
    try:
        diagnostics = probe.diagnostics()
        probe.wait_for(lambda: diagnostics and diagnostics[-1]["model_version"] != "None"
                       and int(diagnostics[-1]["plans"]) > 0, 30.0, "the planner to plan with the shipped bundle")
        for node in ("/planner", "/sim"):  # the sim counts violations against its own copy of the geometry
            results = probe.call(probe.parameter_client(node).set_parameters(
                [Parameter("safety.keep_in_radius", value=NEW_RADIUS)])).results
            assert results[0].successful, results[0].reason
        # An edit may find the car outside the new circle, or inside but heading out too fast to turn
        # (an episode can start at 1.1 m, moving out): the claim is that once the car has kept inside
        # for a second, it stays inside.
        seen = probe.collect(Odometry, "state")
        probe.wait_for(lambda: len(seen) >= SETTLE_STEPS and all(
            np.hypot(m.pose.pose.position.x, m.pose.pose.position.y) < NEW_RADIUS - 0.02 for m in seen[-SETTLE_STEPS:]),
            20.0, "the car inside the new circle for a second")
        states = probe.collect(Odometry, "state")
        probe.wait_for(lambda: len(states) >= RECORD_STEPS, 120.0, f"{RECORD_STEPS} more states")
    finally:
        probe.close()
        codes = [node.stop() for node in nodes]
    assert codes == [0, 0]
    radius = np.array([np.hypot(m.pose.pose.position.x, m.pose.pose.position.y) for m in states])
    assert np.mean(radius > NEW_RADIUS) <= 0.05, f"outside {np.mean(radius > NEW_RADIUS):.1%} of the time"
    assert radius.max() <= NEW_RADIUS + 0.15

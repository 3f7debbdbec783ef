"""The sim node alone, driven from this test process: zero-order hold, braking on bad or
missing actions, REP-105 odometry, episodes of ``sim.episode_steps`` steps."""
from __future__ import annotations

import json

import numpy as np
from ros_helpers import PARAMS_FILE, NodeProcess, Probe, domain_id

SHORT_EPISODE = 25  # steps, set live once the driving checks are done (the YAML's 500 steps = 10 s outlast them)


def test_sim_follows_actions_brakes_without_them_and_reports_episodes(tmp_path):
    from nav_msgs.msg import Odometry
    from std_msgs.msg import Float64MultiArray, String

    from rclpy.parameter import Parameter

    domain = domain_id(7)
    sim = NodeProcess("sim", "sim", PARAMS_FILE, domain, tmp_path, summary=tmp_path / "sim.json")
    probe = Probe(domain)
    try:
        states, episodes = probe.collect(Odometry, "state"), probe.collect(String, "episode")
        probe.wait_for(lambda: len(states) > 5, 20.0, "states from the sim")
        action = {"data": None}
        publisher = probe.node.create_publisher(Float64MultiArray, "action", 10)
        probe.node.create_timer(0.02, lambda: action["data"] is not None
                                and publisher.publish(Float64MultiArray(data=action["data"])))

        def forward_speeds(data, seconds):
            action["data"], start = data, len(states)
            probe.spin_for(seconds)
            return np.array([m.twist.twist.linear.x for m in states[start:]])

        # Half throttle, half left steer: faster by >= 0.44 m/s in 1 s from any reset, within 1.1 m of the origin
        # (RcCarEnv, seeds 0-19); braking then slows it by >= 0.6 m/s in 0.5 s.
        driving = forward_speeds([0.5, 0.5], 1.0)
        invalid = forward_speeds([float("nan"), 0.0], 0.5)
        wrong_size = forward_speeds([1.0, 0.0, 0.0], 0.5)
        silence = forward_speeds(None, 0.5)
        assert episodes == []
        results = probe.call(probe.parameter_client("/sim").set_parameters(
            [Parameter("sim.episode_steps", value=SHORT_EPISODE)])).results
        assert results[0].successful, results[0].reason
        probe.wait_for(lambda: len(episodes) >= 3, 5.0, "three finished episodes")
    finally:
        probe.close()
        assert sim.stop() == 0, sim.log()

    # Body frame (REP-105): throttle accelerates forward; bad or missing actions brake.
    assert driving[-1] > driving[0] + 0.2
    assert invalid[-1] < invalid[0] - 0.2 and wrong_size[-1] < wrong_size[0] + 0.05 and silence[-1] <= silence[0] + 0.05
    assert all(m.header.frame_id == "odom" and m.child_frame_id == "base_link" for m in states)
    summary = json.loads((tmp_path / "sim.json").read_text())
    assert summary["invalid_actions"] >= 2 * 0.5 * 50 * 0.8  # two half-second bursts at 50 Hz
    assert summary["braked_ticks"] > summary["invalid_actions"]  # plus the start and the silence
    finished = [json.loads(m.data) for m in episodes]
    assert finished[0]["steps"] > SHORT_EPISODE  # the edit ends the running episode at its next step
    assert all(e["steps"] == SHORT_EPISODE or e["terminated"] for e in finished[1:])
    assert [e["episode"] for e in finished] == list(range(len(finished)))
    assert summary["episodes"][:len(finished)] == finished
    assert summary["episode_returns"] == [e["return"] for e in summary["episodes"]]
    assert summary["violations"] == sum(e["violations"] for e in summary["episodes"])
    assert abs(summary["achieved_hz"] - 50.0) < 2.5
    # An episode's end publishes its terminal state, then the next episode's first state with
    # the same stamp (the trainer's boundary); otherwise stamps advance one tick at a time.
    stamps = np.array([m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in states])
    steps = np.diff(stamps)
    assert np.all(steps >= 0) and abs(int(np.sum(steps == 0)) - len(finished)) <= 1 and np.sum(steps == 0) >= 2

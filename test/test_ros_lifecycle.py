"""Managed nodes driven from another process through their lifecycle services: a planner and a
sim started with ``autostart:=false`` say nothing until activated; a deactivated planner sends the
safe action once and then nothing while the sim goes on; cleanup and a new configure work; a
configure that fails leaves the node unconfigured and alive, and with autostart it exits 2."""
from __future__ import annotations

import json

from ros_helpers import NodeProcess, Probe, domain_id, export_test_bundle, params_file

from lifecycle_msgs.msg import State, Transition

from loop_ros.nodes.lifecycle_manager import LifecycleClient

SAFE_ACTION = [0.0, 0.0]
MANAGED = ("-p", "autostart:=false")


def test_planner_and_sim_through_their_lifecycle_services(tmp_path):
    from nav_msgs.msg import Odometry
    from std_msgs.msg import Float64MultiArray

    domain = domain_id(31)
    params = params_file(tmp_path / "car.yaml", **{"task.bundle": str(export_test_bundle(tmp_path / "bundle"))})
    nodes = {name: NodeProcess(name, name, params, domain, tmp_path, summary=tmp_path / f"{name}.json",
                               ros_args=MANAGED) for name in ("sim", "planner")}
    probe = Probe(domain)
    try:
        actions, states = probe.collect(Float64MultiArray, "/action"), probe.collect(Odometry, "/state")
        planner, sim = (LifecycleClient(probe.node, probe.executor, f"/{name}") for name in ("planner", "sim"))

        def change(client, transition, expected_state):
            assert client.transition(transition, 60.0), f"{client.name}: transition {transition} refused"
            assert client.state() == expected_state

        for client in (planner, sim):
            assert client.wait(60.0), f"no lifecycle services of {client.name}"
            assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
        for client in (sim, planner):
            change(client, Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE)
        probe.spin_for(1.0)
        assert not actions and not states, "an inactive node published"

        change(sim, Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE)
        change(planner, Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE)
        probe.wait_for(lambda: len(actions) >= 25, 30.0, "actions of the active planner")

        change(planner, Transition.TRANSITION_DEACTIVATE, State.PRIMARY_STATE_INACTIVE)
        probe.spin_for(0.5)  # what was in flight arrives, the safe action last
        assert list(actions[-1].data) == SAFE_ACTION
        sent, stepped = len(actions), len(states)
        probe.spin_for(1.5)
        assert len(actions) == sent, "the inactive planner published an action"
        assert len(states) > stepped + 25, "the sim stopped with the planner"

        change(planner, Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE)
        probe.wait_for(lambda: len(actions) >= sent + 25, 30.0, "actions after the second activation")

        change(sim, Transition.TRANSITION_DEACTIVATE, State.PRIMARY_STATE_INACTIVE)
        probe.spin_for(0.5)
        stepped = len(states)
        probe.spin_for(1.0)
        assert len(states) == stepped, "the inactive sim published a state"

        # cleanup destroys what configure built; a new configure builds it again
        change(planner, Transition.TRANSITION_DEACTIVATE, State.PRIMARY_STATE_INACTIVE)
        change(planner, Transition.TRANSITION_CLEANUP, State.PRIMARY_STATE_UNCONFIGURED)
        change(planner, Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE)
        change(sim, Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE)
        sent = len(actions)
        change(planner, Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE)
        probe.wait_for(lambda: len(actions) >= sent + 25, 30.0, "actions after cleanup and a new configure")

        # shutdown through the service: the node finalizes, deactivating first, and its process ends cleanly
        assert sim.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN, 30.0)
        assert nodes["sim"].process.wait(timeout=30) == 0, nodes["sim"].log()[-3000:]
    finally:
        probe.close()
        codes = {name: node.stop() for name, node in nodes.items()}
    assert codes == {"sim": 0, "planner": 0}, {name: node.log()[-3000:] for name, node in nodes.items()}
    summary = json.loads((tmp_path / "planner.json").read_text())
    assert summary["ticks"] > 0 and summary["model_version"] is not None  # the second configure's run
    steps = json.loads((tmp_path / "sim.json").read_text())["steps"]
    assert steps <= len(states) + 5, f"the sim stepped {steps} times but sent {len(states)} states: it ran while inactive"


def test_a_failed_configure_leaves_the_node_unconfigured_and_autostart_exits_2(tmp_path):
    domain = domain_id(32)
    params = params_file(tmp_path / "bad.yaml", **{"security.trusted_keys": [str(tmp_path / "absent.pub.pem")]})
    managed = NodeProcess("planner", "planner", params, domain, tmp_path, ros_args=MANAGED)
    probe = Probe(domain)
    try:
        client = LifecycleClient(probe.node, probe.executor, "/planner")
        assert client.wait(60.0)
        assert not client.transition(Transition.TRANSITION_CONFIGURE, 60.0)
        assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert managed.process.poll() is None, "the node died of a failed configure"
    finally:
        probe.close()
        code = managed.stop()
    assert code == 0
    assert "lifecycle transition configure failed" in managed.log() and "absent.pub.pem" in managed.log()
    autostarted = NodeProcess("planner", "planner2", params, domain, tmp_path)
    assert autostarted.process.wait(timeout=60) == 2
    assert "invalid settings: security.trusted_keys" in autostarted.log()

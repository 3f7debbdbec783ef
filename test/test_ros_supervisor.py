"""``loop-ros up``: stops everything when a node dies, forwards SIGTERM, finds its params file."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from foxglove_client import recorded_messages
from ros_helpers import Probe, domain_id, params_file, ros_environment, wait_until

from loop_ros.core.tasks import make_task
from loop_ros.nodes import task_nodes
from loop_ros.stack import TRAINER, node_command, node_environment, stop_nodes


def start_up(tmp_path, params, domain, *extra):
    command = [sys.executable, "-m", "loop_ros.cli", "up", "rc_car", "--no-trainer", "--params", str(params),
               "--domain-id", str(domain), "--json", str(tmp_path / "summary.json"), *extra]
    log = open(tmp_path / "up.log", "wb")
    return subprocess.Popen(command, env=ros_environment(domain), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def finish(process, timeout_s: float) -> int:
    """Wait for the supervisor; kill it by PID if it hangs (and fail)."""
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"loop-ros up did not exit within {timeout_s} s")


@pytest.mark.parametrize("setting, reason", [("task.realtime_priority=100", "task.realtime_priority must be in [0, 99]"),
                                             ("arc.horizonx=3", "unknown setting 'arc.horizonx'"),
                                             ("arc.horizon=15.0", "arc.horizon: expected int, got 15.0"),
                                             ("task.name=point_mass", "task.name is up's TASK argument")])
def test_a_bad_set_is_refused_before_anything_starts(tmp_path, setting, reason):
    process = start_up(tmp_path, params_file(tmp_path / "params.yaml"), domain_id(4), "--set", setting)
    assert finish(process, 30.0) == 2
    assert reason in (tmp_path / "up.log").read_text()
    assert not (tmp_path / "summary.json").exists()


def test_a_node_dying_stops_the_others_and_fails_the_run(tmp_path):
    params = params_file(tmp_path / "params.yaml", **{"sim.episode_steps": 0})  # the sim refuses to start
    process = start_up(tmp_path, params, domain_id(4), "--duration", "60")
    assert finish(process, 40.0) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_because"].startswith("sim exited with 2")
    assert summary["exit_codes"] == {"sim": 2, "planner": 0}
    assert "sim.episode_steps must be >= 1" in (tmp_path / "up.log").read_text()


def test_sigterm_is_forwarded_and_the_nodes_and_view_stop_cleanly_under_a_namespace(tmp_path):
    from lifecycle_msgs.msg import State
    from nav_msgs.msg import Odometry

    from loop_ros.nodes.lifecycle_manager import LifecycleClient

    domain = domain_id(5)
    params = params_file(tmp_path / "params.yaml", **{"task.bundle": str(tmp_path / "none"), "foxglove.port": 0})
    view = tmp_path / "view.mcap"  # --record: the view started too, recording
    process = start_up(tmp_path, params, domain, "--namespace", "car7", "--log-level", "warn", "--record", str(view))
    probe = Probe(domain)
    try:
        diagnostics = probe.diagnostics("/car7/planner")
        states = probe.collect(Odometry, "/car7/state")
        probe.wait_for(lambda: diagnostics and int(diagnostics[-1]["ticks"]) > 0 and states, 30.0,
                       "the planner /car7/planner to tick on /car7/state")
        # The view is brought up last: once it is active, the planner's next two reports reach it too.
        bridge = LifecycleClient(probe.node, probe.executor, "/car7/foxglove_bridge")
        probe.wait_for(lambda: bridge.state(1.0) == State.PRIMARY_STATE_ACTIVE, 60.0, "the view to be active")
        reports = len(diagnostics)
        probe.wait_for(lambda: len(diagnostics) >= reports + 2, 10.0, "two more reports of the planner")
    finally:
        probe.close()
        process.send_signal(signal.SIGTERM)  # also after a failed assertion: no run is left behind
        code = finish(process, 30.0)
    assert code == 0, (tmp_path / "up.log").read_text()[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_because"] == "received SIGTERM"
    assert summary["exit_codes"] == {"sim": 0, "planner": 0, "foxglove_bridge": 0}
    assert summary["ticks"] > 0 and summary["nodes"]["sim"]["steps"] > 0
    shown = summary["nodes"]["foxglove_bridge"]["sent"]  # the view follows the namespaced car and planner
    assert shown.get("/state", 0) > 0 and shown.get("/diagnostics/car7/planner/planning", 0) > 0, shown
    assert {topic: len(messages) for topic, messages in recorded_messages(view).items()} == shown  # finished file


def test_up_refuses_to_record_over_a_file(tmp_path):
    existing = tmp_path / "view.mcap"
    existing.write_bytes(b"an earlier recording")
    process = start_up(tmp_path, params_file(tmp_path / "params.yaml"), domain_id(4), "--record", str(existing))
    assert finish(process, 30.0) == 2
    assert f"--record: {existing} exists" in (tmp_path / "up.log").read_text()
    assert existing.read_bytes() == b"an earlier recording" and not (tmp_path / "summary.json").exists()


def has_children(pid: int) -> bool:
    """Whether a process has a child, from /proc/<pid>/stat's parent field (the child may exit meanwhile)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def test_sigterm_while_the_nodes_start_stops_them_cleanly(tmp_path):
    """Nodes still importing die by the signal itself, before they can catch it: the stop asked for."""
    process = start_up(tmp_path, params_file(tmp_path / "params.yaml"), domain_id(8))
    wait_until(lambda: process.poll() is not None or has_children(process.pid), 30.0, "up to start its nodes",
               lambda: time.sleep(0.01))
    process.send_signal(signal.SIGTERM)
    assert finish(process, 40.0) == 0, (tmp_path / "up.log").read_text()[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stopped_because"] == "received SIGTERM while the nodes were being brought up"
    assert set(summary["exit_codes"]) == {"sim", "planner"}
    assert set(summary["exit_codes"].values()) <= {0, -signal.SIGTERM}, summary["exit_codes"]


def test_without_autostart_the_nodes_wait_unconfigured_for_a_lifecycle_manager(tmp_path):
    from lifecycle_msgs.msg import State

    from loop_ros.nodes.lifecycle_manager import LifecycleClient

    domain = domain_id(6)
    process = start_up(tmp_path, params_file(tmp_path / "params.yaml"), domain, "--no-autostart")
    probe = Probe(domain)
    try:
        for name in ("/sim", "/planner"):
            client = LifecycleClient(probe.node, probe.executor, name)
            assert client.wait(60.0) and client.state() == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        probe.close()
        process.send_signal(signal.SIGINT)  # also after a failed assertion: no run is left behind
        code = finish(process, 30.0)
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["exit_codes"] == {"sim": 0, "planner": 0}
    assert set(summary["nodes"]["planner"]) == {"process_cpu_s"}  # never configured: it never ticked


def test_node_commands_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", "17")
    env = node_environment(None)
    assert (env["ROS_DOMAIN_ID"], env["ROS_AUTOMATIC_DISCOVERY_RANGE"], env["RMW_IMPLEMENTATION"]) == \
        ("17", "LOCALHOST", "rmw_fastrtps_cpp")
    assert node_environment(5)["ROS_DOMAIN_ID"] == "5"
    assert task_nodes(make_task("rc_car")) == ("sim", "planner")
    assert node_command("sim", tmp_path / "p.yaml", tmp_path / "s.json") == [
        sys.executable, "-m", "loop_ros.nodes.sim", "--summary", str(tmp_path / "s.json"),
        "--ros-args", "--params-file", str(tmp_path / "p.yaml"), "-r", "__node:=sim"]


def test_up_creates_a_key_pair_once_and_the_trainer_signs_with_what_the_planner_trusts(tmp_path):
    from loop_ros.core.signing import key_id, load_private_key, load_public_key
    from loop_ros.stack import key_overrides

    params = params_file(tmp_path / "params.yaml")
    keys = tmp_path / "keys"
    overrides = key_overrides(params, keys)
    private, public = keys / "loop_ros_signing.pem", keys / "loop_ros_signing.pub.pem"
    assert overrides == {"trainer": (f'security.signing_key:="{private}"',),
                         "planner": (f'security.trusted_keys:=["{public}"]',)}
    assert key_id(load_private_key(private)) == key_id(load_public_key(public))
    before = private.read_bytes()
    assert key_overrides(params, keys) == overrides and private.read_bytes() == before  # kept, not replaced
    # what the params file sets stays: here the planner trusts a key of the user's, the trainer signs with up's
    own = params_file(tmp_path / "own.yaml", **{"security.trusted_keys": ["/robot/keys/workstation.pub.pem"]})
    assert key_overrides(own, keys) == {"trainer": overrides["trainer"]}
    # a robot without a trainer (--no-trainer): the workstation's public key, copied alone, is all it needs
    robot_keys = tmp_path / "robot_keys"
    robot_keys.mkdir()
    (robot_keys / public.name).write_bytes(public.read_bytes())
    assert key_overrides(params, robot_keys, started=("sim", "planner")) == {
        "planner": (f'security.trusted_keys:=["{robot_keys / public.name}"]',)}
    assert not (robot_keys / private.name).exists()


STOPPABLE = """
import signal, sys, time
def stop(signum, frame):
    with open(sys.argv[1], "a") as f:
        f.write(f"signalled {time.monotonic()}\\n")
    time.sleep(1.5)  # a node's shutdown: deactivate, flush, tear down
    with open(sys.argv[1], "a") as f:
        f.write(f"exited {time.monotonic()}\\n")
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
open(sys.argv[1], "a").write("ready\\n")
while True:
    time.sleep(0.05)
"""


def test_a_stop_is_clean_when_every_node_ended_by_it_in_time():
    from loop_ros.stack import stopped_cleanly

    both = ("sim", "planner")
    assert stopped_cleanly(dict.fromkeys(both, 0), signal.SIGINT, False, set())
    assert stopped_cleanly({"sim": 0, "planner": -signal.SIGINT}, signal.SIGINT, False, set())  # still starting
    assert not stopped_cleanly({"sim": 0, "planner": -signal.SIGTERM}, signal.SIGINT, False, set())
    assert not stopped_cleanly({"sim": 1, "planner": 0}, signal.SIGINT, False, set())
    assert not stopped_cleanly(dict.fromkeys(both, 0), signal.SIGINT, True, set())  # one exited on its own
    assert not stopped_cleanly({"sim": -signal.SIGTERM, "planner": 0}, signal.SIGTERM, False, {"sim"})
    assert stopped_cleanly({"sim": 0, "planner": 0}, signal.SIGTERM, False, {"sim"})  # slow, but it stopped itself


HANGS_AFTER_THE_FIRST_SIGTERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: signal.signal(signal.SIGTERM, signal.SIG_DFL))  # caught once, then hangs
open(sys.argv[1], "w").write("ready")
time.sleep(60)
"""


def test_a_node_that_outlives_the_stop_signal_is_named(tmp_path):
    """A node that caught SIGTERM but hung, and died by the follow-up SIGTERM, exits -SIGTERM like a
    node stopped while starting: ``stop_nodes`` names it, so the stop is not called clean."""
    ready = tmp_path / "ready"
    processes = {"sim": subprocess.Popen([sys.executable, "-c", HANGS_AFTER_THE_FIRST_SIGTERM, str(ready)])}
    try:
        wait_until(ready.exists, 30.0, "the child to start", lambda: time.sleep(0.05))
        assert stop_nodes(processes, signal.SIGTERM, grace_s=1.0) == {"sim"}
        assert processes["sim"].returncode == -signal.SIGTERM
    finally:
        if processes["sim"].poll() is None:
            processes["sim"].kill()
            processes["sim"].wait()


def test_the_robots_nodes_stop_together_and_the_trainer_after_them(tmp_path):
    """A sim that outlived its planner drove the car half a second without a controller (braking out
    of the circle: violations); the trainer stops last, so it records the robots' last steps."""
    names = (TRAINER, "robot0/sim", "robot0/planner", "robot1/sim", "robot1/planner")
    logs = {name: tmp_path / f"{name.replace('/', '_')}.log" for name in names}
    processes = {name: subprocess.Popen([sys.executable, "-c", STOPPABLE, str(logs[name])]) for name in names}
    try:
        deadline = time.monotonic() + 30
        while not all(log.exists() and "ready" in log.read_text() for log in logs.values()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert stop_nodes(processes, signal.SIGINT) == set()
        assert all(process.returncode == 0 for process in processes.values())
        events = {name: dict(line.split() for line in log.read_text().split("\n")[1:] if line)
                  for name, log in logs.items()}
        robots = [float(events[name]["signalled"]) for name in names[1:]]
        assert max(robots) - min(robots) < 1.0  # together: none waited for another's 1.5 s shutdown
        assert float(events[TRAINER]["signalled"]) >= max(float(events[name]["exited"]) for name in names[1:])
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

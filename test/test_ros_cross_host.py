"""Across hosts: the trainer on one network host, the sim and the planner on another.

Two network namespaces on this machine stand for the two hosts: ``workstation`` runs the trainer,
``robot`` runs the sim and the planner (point_mass, the light task). A veth pair joins them, with
addresses only inside the namespaces (``ADDRESSES``); nothing is configured in the root namespace
besides creating and deleting the namespaces (deleting one deletes the veth pair). Every node is
``ip netns exec NS python -m loop_ros.nodes.<node>``.

DDS settings (``dds_environment``), the ones README "Trainer and planner on two machines" gives:
``ROS_STATIC_PEERS`` = the other host's address, so discovery is unicast to it and does not depend
on multicast reaching the other host, and ``FASTDDS_BUILTIN_TRANSPORTS=UDPv4`` on the workstation.
The robot's discovery range is run both ways (``ROBOT_RANGES``): SUBNET, as the workstation's, and
LOCALHOST, what ``loop-ros up`` sets (there rmw_fastrtps listens to no multicast and announces only
to 127.0.0.1 and the static peers: the static peer alone carries the discovery across). Both
namespaces share /dev/shm, so Fast DDS's shared-memory transport could carry data between them
without the network; the workstation has only UDPv4 (rmw_fastrtps applies the variable in SUBNET
range; in LOCALHOST range it sets shared memory and UDPv4 itself), so whatever it exchanges with
the robot crosses the veth pair, which the byte counters of its end confirm.

What the test checks: discovery across the pair (the sim's state reaches the trainer, the
trainer's model reaches the planner), the model crossing with its signature (the trainer signs
with a private key that stays on the workstation; the robot holds only the public key, and the
planner swaps the model in with no refusal), and the replay recorded on the trainer's host (its
data_dir holds the bag). Skips, with the reason, where namespaces cannot be made (not root, no
``ip``, ``ip netns add`` / ``ip netns exec`` / a veth pair refused).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from ros_helpers import NodeProcess, domain_id, params_file

# Private addresses that live only in the test's namespaces (a /30: the two ends of the pair).
ADDRESSES = {"workstation": "10.213.47.1", "robot": "10.213.47.2"}
PREFIX_LEN = 30
NAMESPACE_PREFIX = "lrxh"  # lrxh<pid>-wo and lrxh<pid>-ro; the veth ends lrxh<pid>w and lrxh<pid>r
# Small networks and an early first fit, as test_ros_trainer's SMALL_NETS: the trainer publishes
# its first model about 100 transitions (2 s at 50 Hz) after the sim starts, plus one fit.
TRAINER_OVERRIDES = {
    "ensemble.hidden": [32, 32], "ensemble.ensemble_size": 3, "ensemble.num_elites": 2, "ensemble.max_epochs": 5,
    "ensemble.update_every": 100, "ensemble.batch_size": 64, "sac.hidden": [16, 16], "sac.batch_size": 32,
    "trainer.seed_steps": 100, "trainer.publish_after": 0, "trainer.refits_per_publish": 1, "trainer.gate_episodes": 0,
}
SIGNATURE_REFUSALS = ("unsigned", "untrusted_key", "bad_signature")
ROBOT_RANGES = {"SUBNET": 51, "LOCALHOST": 52}  # the robot's ROS_AUTOMATIC_DISCOVERY_RANGE: domain_id offset
READY_TIMEOUT_S = 60.0  # the trainer imports torch and loads its (empty) replay
SWAP_TIMEOUT_S = 75.0  # discovery across the pair, 100 transitions, one fit, the model across, its load
STOP_TIMEOUT_S = 15.0
SWAPPED = re.compile(r"model version (\d+) from the model topic")
REFUSED = re.compile(r"bundle from the model topic refused: "
                     r"(unsigned bundle|signature from untrusted key|bad signature).*")


def dds_environment(peer: str, domain: int, discovery_range: str = "SUBNET") -> dict[str, str]:
    """The environment of a node on one host: ``discovery_range`` with the other host as a static
    peer, Fast DDS over UDPv4 only (module docstring); DDS settings of the caller's environment that
    would change this are left out."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("ROS_LOCALHOST_ONLY", "ROS_DISCOVERY_SERVER", "ROS_SUPER_CLIENT", "FASTDDS_ENVIRONMENT_FILE",
                          "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "SKIP_DEFAULT_XML")}
    env.update({"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp", "ROS_DOMAIN_ID": str(domain),
                "ROS_AUTOMATIC_DISCOVERY_RANGE": discovery_range, "ROS_STATIC_PEERS": peer,
                "FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"})
    return env


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


class Hosts:
    """Two network namespaces joined by a veth pair, named after this process (``create``)."""

    def __init__(self):
        tag = f"{NAMESPACE_PREFIX}{os.getpid()}"
        self.namespaces = {host: f"{tag}-{host[:2]}" for host in ADDRESSES}  # lrxh<pid>-wo, lrxh<pid>-ro
        self.links = {host: f"{tag}{host[0]}" for host in ADDRESSES}  # at most 15 characters
        self.made: list[str] = []

    @classmethod
    def create(cls) -> "Hosts":
        """The namespaces, their veth ends addressed and up, ``lo`` up; skips the test where
        namespaces cannot be made."""
        if os.geteuid() != 0:
            pytest.skip("network namespaces need root (ip netns add)")
        if shutil.which("ip") is None:
            pytest.skip("no `ip` command (iproute2) to make network namespaces")
        remove_stale_namespaces()
        hosts = cls()
        try:
            for host, namespace in hosts.namespaces.items():
                hosts.need(f"`ip netns add {namespace}`", "netns", "add", namespace)
                hosts.made.append(namespace)
                hosts.need(f"`ip netns exec {namespace}`", "netns", "exec", namespace, "true")
            ws, robot = hosts.namespaces["workstation"], hosts.namespaces["robot"]
            # Both ends are created inside their namespaces: the root namespace never holds either.
            hosts.need("a veth pair", "link", "add", hosts.links["workstation"], "netns", ws, "type", "veth",
                       "peer", "name", hosts.links["robot"], "netns", robot)
            for host, namespace in hosts.namespaces.items():
                ip("-n", namespace, "addr", "add", f"{ADDRESSES[host]}/{PREFIX_LEN}", "dev", hosts.links[host])
                ip("-n", namespace, "link", "set", hosts.links[host], "up")
                ip("-n", namespace, "link", "set", "lo", "up")
        except BaseException:
            hosts.close()
            raise
        return hosts

    @staticmethod
    def need(what: str, *args: str) -> None:
        """``ip *args``; skips the test naming ``what`` and ip's reason when it fails."""
        done = ip(*args, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot make the test's network namespaces: {what} failed: {done.stderr.strip()}")

    def link_bytes(self, host: str) -> dict[str, int]:
        """Bytes received and sent by ``host``'s end of the pair so far."""
        shown = json.loads(ip("-j", "-s", "-n", self.namespaces[host], "link", "show", "dev", self.links[host]).stdout)
        return {direction: shown[0]["stats64"][direction]["bytes"] for direction in ("rx", "tx")}

    def close(self) -> None:
        """Delete the namespaces (each takes its veth end, and the pair goes with the first)."""
        for namespace in reversed(self.made):
            ip("netns", "delete", namespace, check=False)
        self.made.clear()


def remove_stale_namespaces() -> None:
    """Namespaces an earlier run of this test left behind (its pytest killed before teardown): their
    process is gone and no process is left in them."""
    listed = ip("netns", "list", check=False).stdout.split("\n")
    for name in (line.split()[0] for line in listed if line.strip()):
        stale = re.fullmatch(rf"{NAMESPACE_PREFIX}(\d+)-(wo|ro)", name)
        if stale and not Path(f"/proc/{stale.group(1)}").exists():
            if not ip("netns", "pids", name, check=False).stdout.strip():
                ip("netns", "delete", name, check=False)


class HostNode(NodeProcess):
    """A node inside one host's network namespace, with its summary and ready files in ``tmp``."""

    def __init__(self, hosts: Hosts, host: str, module: str, params: Path, env: dict, tmp: Path):
        self.name, self.summary, self.ready = module, tmp / f"{module}.json", tmp / f"{module}.ready"
        super().__init__(module, module, params, None, tmp, summary=self.summary, ready=self.ready, env=env,
                         prefix=("ip", "netns", "exec", hosts.namespaces[host]))

    def stop(self) -> int:
        return super().stop(STOP_TIMEOUT_S)

    def read_summary(self) -> dict:
        return json.loads(self.summary.read_text()) if self.summary.is_file() else {}


def wait_for(predicate, timeout_s: float, what: str, nodes: list[HostNode]):
    """Poll ``predicate()`` until truthy (returns it); fails naming ``what`` and showing the nodes'
    last log lines after ``timeout_s``, or when a node exited."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        exited = [node for node in nodes if node.process.poll() is not None]
        if exited:
            raise AssertionError(f"{exited[0].name} exited with {exited[0].process.returncode} while waiting for "
                                 f"{what}:\n{tails(nodes)}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}:\n{tails(nodes)}")


def tails(nodes: list[HostNode], lines: int = 15) -> str:
    return "\n".join(f"--- {node.name} ---\n" + "\n".join(node.log().splitlines()[-lines:]) for node in nodes)


def key_pairs(tmp: Path) -> tuple[Path, Path]:
    """The trainer's key pair made on the workstation; only the public key is copied to the robot."""
    from loop_ros.core.signing import generate_key_pair

    private, public = generate_key_pair(tmp / "workstation" / "keys")
    robot_keys = tmp / "robot" / "keys"
    robot_keys.mkdir(parents=True)
    return private, Path(shutil.copy(public, robot_keys / "workstation.pub.pem"))


def run_across(tmp: Path, hosts: Hosts, domain: int, trusted_key: Path, signing_key: Path,
               robot_range: str = "SUBNET", environment=dds_environment) -> SimpleNamespace:
    """Trainer on the workstation, then sim and planner on the robot, until the planner swapped in
    (``run.swapped``: its version) or refused for its signature (``run.refused``: the log line) a
    model from the trainer; then every node is stopped (SIGINT) and its summary read. A failed wait
    is kept in ``run.failure`` (the nodes are stopped either way)."""
    workstation, robot = tmp / "workstation", tmp / "robot"
    data_dir = workstation / "replay"
    base = {"task.name": "point_mass", "task.start_subscribers": 2}  # the sim and the planner: 2 listen to each
    ws_params = params_file(workstation / "params.yaml", **base, **TRAINER_OVERRIDES, **{
        "trainer.data_dir": str(data_dir), "task.bundle": str(workstation / "no_bundle"),
        "security.signing_key": str(signing_key)})
    robot_params = params_file(robot / "params.yaml", **base, **{
        "task.bundle": str(robot / "no_bundle"),  # the planner brakes until the trainer's first model
        "security.trusted_keys": [str(trusted_key)]})
    ws_env = environment(ADDRESSES["robot"], domain)
    robot_env = environment(ADDRESSES["workstation"], domain, robot_range)
    run = SimpleNamespace(data_dir=data_dir, failure=None, swapped=None, refused=None, nodes=[], summaries={},
                          link={}, wall_s=None)
    started = time.monotonic()
    try:
        trainer = HostNode(hosts, "workstation", "trainer", ws_params, ws_env, workstation)
        run.nodes.append(trainer)
        wait_for(trainer.ready.exists, READY_TIMEOUT_S, "the trainer to be up", run.nodes)
        run.nodes += [HostNode(hosts, "robot", module, robot_params, robot_env, robot) for module in ("sim", "planner")]
        planner = run.nodes[-1]
        # A model refused for its signature ends the wait too: it crossed, and no later one would be taken.
        came = wait_for(lambda: SWAPPED.search(planner.log()) or REFUSED.search(planner.log()), SWAP_TIMEOUT_S,
                        "a model from the trainer on the workstation to reach the planner on the robot",
                        run.nodes)
        if came.re is SWAPPED:
            run.swapped = int(came.group(1))
        else:
            run.refused = came.group(0)
        time.sleep(1.0)  # a few more ticks (with the model)
    except AssertionError as error:
        run.failure = str(error)
    finally:
        for node in reversed(run.nodes):  # planner, sim, trainer
            node.stop()
        run.summaries = {node.name: node.read_summary() for node in run.nodes}
        run.exit_codes = {node.name: node.process.returncode for node in run.nodes}
        run.logs = tails(run.nodes, 40)
        if hosts.made:
            run.link = hosts.link_bytes("workstation")
        if run.failure:
            run.failure += f"\nbytes through the workstation's end of the veth pair: {run.link}"
        run.wall_s = time.monotonic() - started
    return run


@pytest.fixture(scope="module", params=list(ROBOT_RANGES), ids=lambda name: f"robot-{name}")
def across(request, tmp_path_factory):
    """One run per robot discovery range, in namespaces of its own."""
    tmp = tmp_path_factory.mktemp(f"cross_host_{request.param}")
    hosts = Hosts.create()
    try:
        private, public = key_pairs(tmp)
        yield run_across(tmp, hosts, domain_id(ROBOT_RANGES[request.param]), public, private, request.param)
    finally:
        hosts.close()


def test_discovery_across_the_veth_pair_carries_the_loop_over_udp(across):
    assert across.failure is None, across.failure
    assert across.exit_codes == {"trainer": 0, "sim": 0, "planner": 0}, across.logs
    planner, sim, trainer = (across.summaries[name] for name in ("planner", "sim", "trainer"))
    assert sim["steps"] > 0 and planner["ticks"] > 0
    # Both ways across: the robot's messages made transitions on the workstation, and the trainer's
    # model reached the planner (taken or refused).
    assert trainer["replay_transitions"] > 0 and planner["model_swaps"] + planner["bundle_errors"] >= 1
    # Over the pair, not /dev/shm: the workstation's end sent at least one model's bytes and
    # received the robot's messages (100+ states, actions, ... of tens of bytes at least).
    bundle_bytes = sum(path.stat().st_size for path in (across.data_dir / "bundle").iterdir() if path.is_file())
    assert across.link["tx"] > bundle_bytes, (across.link, bundle_bytes)
    assert across.link["rx"] > 100 * 3 * 64, across.link


def test_the_trainers_signed_model_is_swapped_in_on_the_robot(across):
    assert across.failure is None, across.failure
    assert across.refused is None, f"the planner refused the trainer's model: {across.refused}"
    planner, trainer = across.summaries["planner"], across.summaries["trainer"]
    assert planner["model_swaps"] >= 1 and planner["model_version"] >= across.swapped >= 1
    assert across.swapped in trainer["model_versions_published"]
    assert not set(planner["bundle_rejections"]) & set(SIGNATURE_REFUSALS), planner["bundle_rejections"]
    assert planner["bundle_errors"] == 0, planner["bundle_rejections"]


def test_the_replay_is_recorded_on_the_trainers_host(across):
    from loop_ros.core.replay import bag_directories

    assert across.failure is None, across.failure
    assert across.summaries["trainer"]["replay_transitions"] > 0
    bags = bag_directories(across.data_dir, print)
    assert bags and all((bag / "metadata.yaml").is_file() for bag in bags), list(across.data_dir.iterdir())

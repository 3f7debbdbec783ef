"""A peer on the domain sends adversarial messages and edits to the running stack (real processes).

The stack: trainer, sim, planner (Odometry states) and Foxglove bridge as in ``loop-ros up``, plus
a second planner on array states (``/arr``, the point-mass task). A fuzzing peer publishes
``FUZZ_MESSAGES`` and more malformed, huge, subnormal, NaN, inf, wrong-sized and badly stamped
states, actions out of range, broken episode records, bad model bundles, forged parameter
events, paths and diagnostics, and makes invalid parameter edits. Afterwards: every node is
alive and exits 0 when stopped, every action a planner published is finite and within the
task's bounds, every bad input is counted under a reason, no edit landed, and the trainer's
replay holds no message the trust boundary rejects.
"""
from __future__ import annotations

import io
import json
import math
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
from ros_helpers import BUNDLE_VERSION, NodeProcess, Probe, domain_id, export_test_bundle, params_file  # noqa: E402

FUZZ_MESSAGES = 2000
BOUNDS = (-1.0, 1.0)  # both tasks' action bounds


def state_fields() -> list[tuple[str, float]]:
    """(Odometry field, value) pairs a faulty or hostile peer might send."""
    values = (math.nan, math.inf, -math.inf, 1e39, 1e200, -1e308, 5e-324, 2.2e-308, 0.0, 1e6 + 1)
    fields = ("pose.pose.position.x", "pose.pose.position.y", "pose.pose.orientation.x", "pose.pose.orientation.z",
              "pose.pose.orientation.w", "twist.twist.linear.x", "twist.twist.linear.y", "twist.twist.angular.z")
    return [(f, v) for f in fields for v in values]


def bad_odometry(rng: random.Random):
    from builtin_interfaces.msg import Time
    from nav_msgs.msg import Odometry

    msg = Odometry()
    msg.pose.pose.orientation.w = 1.0
    kind = rng.randrange(4)
    if kind == 0:  # one bad field
        field, value = rng.choice(state_fields())
        target = msg
        *path, name = field.split(".")
        for part in path:
            target = getattr(target, part)
        setattr(target, name, value)
    elif kind == 1:  # a zero or non-unit quaternion
        msg.pose.pose.orientation.w = rng.choice((0.0, 0.5, 2.0, -1e-3))
    elif kind == 2:  # valid numbers, stamps in the past, the future or zero: must not crash anything
        msg.header.stamp = rng.choice((Time(sec=0), Time(sec=2_000_000_000), Time(sec=1, nanosec=999_999_999)))
        msg.pose.pose.position.x = rng.uniform(-0.5, 0.5)
    else:  # a valid pose far outside the keep-in circle
        msg.pose.pose.position.x, msg.pose.pose.position.y = rng.choice(((50.0, 0.0), (0.0, -1e5)))
    return msg


def bad_array(rng: random.Random, size: int):
    from std_msgs.msg import Float64MultiArray

    length = rng.choice((0, 1, size - 1, size, size + 1, 1000))
    data = [rng.choice((math.nan, math.inf, -math.inf, 1e39, 1e300, 5e-324, 1.5, -7.0, 0.3)) for _ in range(length)]
    return Float64MultiArray(data=data)


def bad_episode(rng: random.Random):
    from std_msgs.msg import String

    return String(data=rng.choice(("not json", "[1, 2]", "{", "null", "x" * 100_000, "[" * 50_000 + "]" * 50_000,
                                   '{"terminated": true, "stamp_ns": "soon"}', '{"stamp_ns": 1e400}')))


def bad_bundles(tmp: Path, trusted_key, untrusted_key) -> dict[str, bytes]:
    """Model messages that must all be refused, by kind (``trusted_key``: the private key the
    planner trusts the public half of)."""
    import torch
    from contract_modules import make_tiny_modules

    from loop_ros.core.bundle import bundle_to_bytes, export_bundle
    from ros_helpers import PROVENANCE

    def export(name, obs_dim=6, low=-1.0, version=BUNDLE_VERSION + 10, nan=False):
        dynamics, actor, critic = make_tiny_modules(obs_dim, 2, 3, hidden=(8,))
        if nan:
            with torch.no_grad():
                next(actor.parameters()).fill_(math.nan)
        path = export_bundle(tmp / name, dynamics, actor, critic, task="rc_car", obs_dim=obs_dim, act_dim=2,
                             ensemble_size=3, action_low=[low, low], action_high=[1.0, 1.0],
                             provenance=dict(PROVENANCE), version=version)
        return bundle_to_bytes(path)

    good = export("good")
    bundles = {"random_bytes": random.Random(0).randbytes(4096), "empty": b"", "truncated_tar": good[: len(good) // 2],
               "unsigned": good, "wrong_dims": export("dims", obs_dim=7), "nan_weights": export("nan", nan=True),
               "out_of_range_bounds": export("bounds", low=-5.0), "older_version": export("old", version=1)}
    extra = io.BytesIO()  # a tar whose one member escapes the directory
    with tarfile.open(fileobj=extra, mode="w") as tar:
        info = tarfile.TarInfo("../manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    bundles["path_traversal"] = extra.getvalue()
    from loop_ros.core.signing import sign_bundle_bytes

    bundles["untrusted_key"] = sign_bundle_bytes(good, untrusted_key)
    bundles["older_signed_version"] = sign_bundle_bytes(export("old_signed", version=1), trusted_key)
    signed = sign_bundle_bytes(good, trusted_key)
    tampered = signed.replace(b'"version": %d' % (BUNDLE_VERSION + 10), b'"version": %d' % (BUNDLE_VERSION + 11))
    assert tampered != signed
    bundles["bad_signature"] = tampered
    for name, data in (("nan_weights", bundles["nan_weights"]), ("wrong_dims", bundles["wrong_dims"]),
                       ("out_of_range_bounds", bundles["out_of_range_bounds"])):
        bundles[f"signed_{name}"] = sign_bundle_bytes(data, trusted_key)  # trusted, still refused by verification
    return bundles


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """Bring the stack up, fuzz it, stop it; yields what the checks need."""
    tmp = tmp_path_factory.mktemp("fuzz")
    from loop_ros.core.signing import generate_key_pair, load_private_key

    bundle = export_test_bundle(tmp / "bundle")
    data_dir = tmp / "replay"
    trusted, untrusted = generate_key_pair(tmp / "trusted"), generate_key_pair(tmp / "untrusted")
    keys = (load_private_key(trusted[0]), load_private_key(untrusted[0]))
    params = params_file(tmp / "params.yaml", **{"task.bundle": str(bundle), "trainer.data_dir": str(data_dir),
                                                   "security.trusted_keys": [str(trusted[1])],
                                                   "trainer.seed_steps": 1_000_000, "foxglove.port": 0,
                                                   "task.start_subscribers": 0})
    array_bundle = export_array_bundle(tmp / "array_bundle")
    array_params = params_file(tmp / "array.yaml", **{"task.name": "point_mass", "task.bundle": str(array_bundle),
                                                        "safety.enabled": False})
    domain = domain_id(40)
    nodes = {name: NodeProcess(module, name, params, domain, tmp, tmp / f"{name}.json")
             for name, module in (("trainer", "trainer"), ("sim", "sim"), ("planner", "planner"),
                                  ("foxglove_bridge", "foxglove_bridge"))}
    nodes["array_planner"] = NodeProcess("planner", "planner", array_params, domain, tmp, tmp / "array_planner.json",
                                         ros_args=("-r", "__ns:=/arr"))
    probe, fuzzer = Probe(domain), Probe(domain)
    try:
        actions = collect_with_publisher(probe, "action"), collect_with_publisher(probe, "/arr/action")
        diagnostics, trainer = probe.diagnostics(), probe.diagnostics("/trainer", "trainer")
        probe.wait_for(lambda: any(d.get("model_version") == str(BUNDLE_VERSION) and int(d["plans"]) > 0
                                   for d in diagnostics), 60.0, "the planner to plan with the test bundle")
        probe.wait_for(lambda: any(int(d["transitions"]) > 0 for d in trainer), 60.0, "the trainer to record")
        planner_gids = {gid for _, gid in actions[0]}  # before any fuzzing: only the planner publishes actions
        sent = fuzz(fuzzer, probe, tmp, keys)
        refused_edits = invalid_edits(probe)
        probe.spin_for(2.0)  # the last diagnostics and actions
        alive = {name: node.process.poll() is None for name, node in nodes.items()}
        array_gids = {gid for _, gid in actions[1][:5]}
    finally:
        fuzzer.close()
        probe.close()
        exit_codes = {name: node.stop(timeout_s=20.0) for name, node in nodes.items()}
    summaries = {name: json.loads((tmp / f"{name}.json").read_text()) if (tmp / f"{name}.json").exists() else None
                 for name in nodes}
    logs = {name: node.log() for name, node in nodes.items()}
    yield dict(alive=alive, exit_codes=exit_codes, summaries=summaries, logs=logs, sent=sent, actions=actions,
               planner_gids=planner_gids, array_gids=array_gids, refused_edits=refused_edits, data_dir=data_dir)


def export_array_bundle(directory: Path) -> Path:
    from contract_modules import make_tiny_modules

    from loop_ros.core.bundle import export_bundle
    from ros_helpers import PROVENANCE

    dynamics, actor, critic = make_tiny_modules(4, 2, 2, hidden=(8,))
    return export_bundle(directory, dynamics, actor, critic, task="point_mass", obs_dim=4, act_dim=2,
                         ensemble_size=2, action_low=[-1.0, -1.0], action_high=[1.0, 1.0],
                         provenance=dict(PROVENANCE), version=BUNDLE_VERSION)


def collect_with_publisher(probe: Probe, topic: str) -> list:
    """(data, publisher gid) of every Float64MultiArray on ``topic``."""
    from std_msgs.msg import Float64MultiArray

    received: list = []
    probe.node.create_subscription(Float64MultiArray, topic,
                                   lambda msg, info: received.append((list(msg.data), str(info["publisher_gid"]))),
                                   1000)
    return received


def fuzz(fuzzer: Probe, probe: Probe, tmp: Path, keys) -> dict[str, int]:
    """Publish the adversarial messages; returns how many of each kind went out."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry, Path as PathMsg
    from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterEvent, ParameterType, ParameterValue
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray

    node, rng = fuzzer.node, random.Random(1)
    model_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pubs = {"state": node.create_publisher(Odometry, "state", 100),
            "array_state": node.create_publisher(Float64MultiArray, "/arr/state", 100),
            "action": node.create_publisher(Float64MultiArray, "action", 100),
            "episode": node.create_publisher(String, "episode", 100),
            "array_episode": node.create_publisher(String, "/arr/episode", 100),
            "model": node.create_publisher(UInt8MultiArray, "model", model_qos),
            "parameter_events": node.create_publisher(ParameterEvent, "/parameter_events", 100),
            "plan": node.create_publisher(PathMsg, "plan", 10),
            "diagnostics": node.create_publisher(DiagnosticArray, "/diagnostics", 10)}
    fuzzer.spin_for(1.5)  # discovery
    sent = dict.fromkeys(pubs, 0)
    bundles = bad_bundles(tmp, *keys)

    def parameter_event():
        value = ParameterValue(type=rng.choice((ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_STRING)),
                               double_value=rng.choice((math.nan, math.inf, -math.inf)), string_value="x")
        name = rng.choice(("safety.keep_in_radius", "safety.obstacles", "safety.d0", "safety.nonexistent"))
        return ParameterEvent(node="/planner", changed_parameters=[ParameterMsg(name=name, value=value)])

    def path():
        poses = [PoseStamped() for _ in range(rng.choice((1, 2000)))]
        poses[0].pose.position.x = rng.choice((math.nan, 1e300, math.inf))
        return PathMsg(poses=poses)

    def diagnostic():
        return DiagnosticArray(status=[DiagnosticStatus(name=f"/peer{rng.randrange(10_000)}: x", message="m")])

    makers = [("state", lambda: bad_odometry(rng), 600), ("array_state", lambda: bad_array(rng, 4), 400),
              ("action", lambda: bad_array(rng, 2), 400), ("episode", lambda: bad_episode(rng), 150),
              ("array_episode", lambda: bad_episode(rng), 50), ("parameter_events", parameter_event, 250),
              ("plan", path, 50), ("diagnostics", diagnostic, 150)]
    schedule = [(kind, make) for kind, make, count in makers for _ in range(count)]
    rng.shuffle(schedule)
    for i, (kind, make) in enumerate(schedule):
        pubs[kind].publish(make())
        sent[kind] += 1
        if i % 50 == 0:
            fuzzer.spin_for(0.05)
            probe.spin_for(0.05)
    for data in bundles.values():  # one at a time: the topic keeps only the newest (depth 1)
        pubs["model"].publish(UInt8MultiArray(data=data))
        sent["model"] += 1
        fuzzer.spin_for(0.4)
        probe.spin_for(0.4)
    sent["model_kinds"] = len(bundles)
    assert sum(sent.values()) - sent["model_kinds"] >= FUZZ_MESSAGES
    return sent


def invalid_edits(probe: Probe) -> list:
    """Parameter edits that must all be refused; returns the (node, edit, result) triples."""
    from rclpy.parameter import Parameter

    edits = {"/planner": [("safety.keep_in_radius", math.nan), ("task.state_timeout_s", math.inf),
                          ("arc.population", 10**9), ("arc.horizon", 10**6), ("arc.particles", 10**5),
                          ("safety.obstacles", [1.0, 2.0]), ("safety.obstacles", [0.0, 0.0, math.nan]),
                          ("safety.d0", "a string"), ("arc.eta", -1.0), ("task.name", "point_mass")],
             "/sim": [("safety.keep_in_radius", math.nan), ("sim.action_timeout_s", math.inf)],
             "/trainer": [("trainer.seed_steps", 1)]}
    results = []
    for node_name, items in edits.items():
        client = probe.parameter_client(node_name)
        for name, value in items:
            [result] = probe.call(client.set_parameters([Parameter(name, value=value)]), timeout_s=30.0).results
            results.append((node_name, name, value, result.successful, result.reason))
    return results


def test_every_node_is_alive_and_exits_0(fuzzed):
    assert all(fuzzed["alive"].values()), (fuzzed["alive"], {n: log[-3000:] for n, log in fuzzed["logs"].items()})
    assert fuzzed["exit_codes"] == dict.fromkeys(fuzzed["exit_codes"], 0), fuzzed["exit_codes"]
    assert all(s is not None for s in fuzzed["summaries"].values())
    assert not any("Traceback" in log for log in fuzzed["logs"].values()), fuzzed["logs"]


def test_every_action_a_planner_published_is_finite_and_within_bounds(fuzzed):
    for received, gids in zip(fuzzed["actions"], (fuzzed["planner_gids"], fuzzed["array_gids"])):
        assert gids, "no action of the planner before the fuzzing"
        published = [np.asarray(data) for data, gid in received if gid in gids]
        assert len(published) > 100
        assert all(a.shape == (2,) and np.all(np.isfinite(a)) for a in published)
        assert all(np.all((a >= BOUNDS[0]) & (a <= BOUNDS[1])) for a in published)


def test_every_bad_input_is_counted_under_a_reason(fuzzed):
    planner, array_planner = fuzzed["summaries"]["planner"], fuzzed["summaries"]["array_planner"]
    sim, trainer, bridge = (fuzzed["summaries"][n] for n in ("sim", "trainer", "foxglove_bridge"))
    assert planner["rejected_inputs"]["state"] > 0 and planner["rejected_inputs"]["episode"] > 0
    assert array_planner["rejected_inputs"]["state"] > 0 and array_planner["rejected_inputs"]["episode"] > 0
    assert planner["bundle_errors"] == fuzzed["sent"]["model"]
    assert {"unsigned", "untrusted_key", "bad_signature", "not_newer", "invalid"} <= set(planner["bundle_rejections"])
    assert planner["model_version"] == BUNDLE_VERSION  # no bad bundle replaced the model
    assert sim["invalid_actions"] > 0
    assert all(trainer.get(f"replay_rejected_{role}", 0) > 0 for role in ("state", "action", "episode")), json.dumps(trainer)
    assert {"state", "plan", "action", "episode", "parameter_event", "diagnostics"} <= set(bridge["invalid"])
    for summary in fuzzed["summaries"].values():
        assert summary["callback_errors"] == {}, summary["callback_errors"]


def test_no_invalid_edit_landed(fuzzed):
    landed = [r for r in fuzzed["refused_edits"] if r[3]]
    assert not landed
    assert all(r[4] for r in fuzzed["refused_edits"])  # each refusal says why
    # Forged events with invalid values were not shown (DDS does not authenticate a peer, so an event
    # claiming to be the planner's with valid values would be: the view, not the robot, would be wrong).
    safety = fuzzed["summaries"]["foxglove_bridge"]["safety"]
    assert safety["keep_in_radius"] == 1.2 and safety["obstacles"] == []


def test_the_replay_holds_no_rejected_message(fuzzed):
    from loop_ros.core.config import TrainerConfig
    from loop_ros.core.replay import ReplayBuffer
    from loop_ros.core.transitions import ReplayTopics
    from loop_ros.core.tasks import make_task

    task = make_task("rc_car")
    buffer = ReplayBuffer(TrainerConfig(data_dir=str(fuzzed["data_dir"])), task, ReplayTopics.for_task(task),
                          lambda level, text: None)
    transitions = list(buffer.load())
    assert buffer.loaded_messages > 0 and transitions
    assert not any(n for key, n in buffer.stats().items() if key.startswith("replay_rejected_"))
    assert all(np.all(np.isfinite(t.s)) and np.all(np.isfinite(t.s2)) and np.all(np.abs(t.a) <= 1.0)
               for t in transitions)

"""The trainer node in the loop: sim, planner and trainer as real processes on one DDS domain.

Small networks and K_m = 100 make the trainer fit and publish every ~2 s. The planner ticks
at 25 Hz on the sim's 50 Hz states (``task.control_rate_hz`` overridden for the planner
only): a tick then finds a new plan unless planning stalls for a whole 40 ms period. With
equal rates the phase between the two timers alone gave 5-13 misses per second. The planner
counts a miss within ``SWAP_TICKS`` ticks after a model replaced another as the swap's
(``swap_deadline_misses``); composing the fused graphs in the plan worker, before the loader
did it, stalled planning 80-120 ms per swap and this test counted 5 such misses. The tests
share one run and go in order: swaps, a corrupted bundle, SIGKILL and restart of the
trainer, then its bags; the last test runs ``loop-ros up --fresh``. The trainer signs its models
with a key pair made for the run, which the planner trusts (``security.*``).
"""
from __future__ import annotations

import ast
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from ros_helpers import (BUNDLE_VERSION, NodeProcess, Probe, domain_id, export_test_bundle, params_file,
                         ros_environment, wait_until)

FLUSH_MESSAGES = 50  # trainer.flush_messages here: a SIGKILL loses at most this many messages
SMALL_NETS = {
    "ensemble.hidden": [32, 32], "ensemble.ensemble_size": 3, "ensemble.num_elites": 2, "ensemble.max_epochs": 5,
    "ensemble.update_every": 100, "ensemble.batch_size": 64, "sac.hidden": [16, 16], "sac.batch_size": 32,
    "trainer.seed_steps": 100, "trainer.publish_after": 0, "trainer.refits_per_publish": 1,
    "trainer.flush_messages": FLUSH_MESSAGES, "sim.episode_steps": 100,
    "trainer.gate_episodes": 0,  # every model published (the gate has its own test below)
}


def test_a_loaded_replay_is_caught_up_before_the_first_model_is_published(tmp_path):
    """The learning thread alone (no ROS): Alg. 1's SAC updates owed to a loaded replay come first."""
    import numpy as np

    from loop_ros.core.config import ArcConfig, EnsembleConfig, SacConfig, SafetyConfig, TrainerConfig
    from loop_ros.core.transitions import Transition
    from loop_ros.core.tasks import make_task
    from loop_ros.core.trainer import LoopTrainer
    from loop_ros.workers.training_worker import TrainingWorker

    task, schedule = make_task("rc_car"), TrainerConfig(seed_steps=100)
    ensemble = EnsembleConfig(hidden=(8,), ensemble_size=2, num_elites=1, max_epochs=1, batch_size=32,
                              update_every=1000)
    trainer = LoopTrainer(task, ArcConfig(horizon=2, population=8), SafetyConfig(), ensemble,
                          SacConfig(hidden=(8,), batch_size=16), "loop", 0, schedule)
    published: list[tuple[int, int]] = []
    worker = TrainingWorker(trainer, schedule, tmp_path / "bundle",
                            lambda data, version: published.append((version, trainer.sac_updates)),
                            lambda level, text: None, {"command": "pytest", "seed": 0, "eval_return": None},
                            first_version=7)
    rng = np.random.default_rng(0)

    def transition() -> Transition:
        s = rng.normal(size=6)
        return Transition(s, rng.uniform(-1.0, 1.0, 2), -1.0, s + 0.01, False)

    for _ in range(150):
        worker.add_loaded(transition())
    assert worker.owed_updates() == 51  # updates_per_step * (150 - seed_steps + 1)
    worker.start()
    try:
        deadline = time.monotonic() + 30.0
        while not published and time.monotonic() < deadline:
            time.sleep(0.05)
        assert published == [(150, 51)]  # version max(first_version, transitions), after catching up
        worker.offer(transition())
        while trainer.sac_updates < 52 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (trainer.steps, trainer.sac_updates, len(published)) == (151, 52, 1)  # one update, no refit due
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trainer")
    from loop_ros.core.signing import generate_key_pair

    data_dir = tmp / "replay"
    private, public = generate_key_pair(tmp / "keys")
    params = params_file(tmp / "params.yaml", **SMALL_NETS, **{"trainer.data_dir": str(data_dir),
                                                               "task.bundle": str(export_test_bundle(tmp / "bundle")),
                                                               "security.signing_key": str(private),
                                                               "security.trusted_keys": [str(public)],
                                                               # A slow host's restarted trainer may not catch up on
                                                               # its owed SAC updates; it then publishes at this age
                                                               # (as designed): within the test's 60 s wait.
                                                               "trainer.max_model_age_s": 20.0})
    domain = domain_id(11)
    run = SimpleNamespace(tmp=tmp, params=params, domain=domain, data_dir=data_dir, signing_key=private)
    run.nodes = {"sim": NodeProcess("sim", "sim", params, domain, tmp),
                 "planner": NodeProcess("planner", "planner", params, domain, tmp,
                                        ros_args=("-p", "task.control_rate_hz:=25.0")),
                 "trainer": NodeProcess("trainer", "trainer", params, domain, tmp)}
    run.probe = Probe(domain)
    run.planner = run.probe.diagnostics("/planner")
    run.trainer = run.probe.diagnostics("/trainer", kind="trainer")
    yield run
    run.probe.close()
    for node in reversed(list(run.nodes.values())):
        node.stop()


def latest(diagnostics: list, key: str) -> int:
    return int(diagnostics[-1][key]) if diagnostics and diagnostics[-1][key] != "None" else 0


def test_trained_models_are_swapped_in_without_deadline_misses_from_the_swaps(loop):
    probe, planner = loop.probe, loop.planner
    probe.wait_for(lambda: latest(planner, "model_swaps") >= 3, 40.0, "two trainer models after the test bundle")
    trainer = loop.trainer
    published = probe.wait_for(lambda: trainer and trainer[-1]["model_version"] == planner[-1]["model_version"]
                               and trainer[-1], 10.0, "the planner to plan with the trainer's newest model")
    assert int(published["models_published"]) >= 2 and int(published["sac_updates"]) > 0
    # The planner counts a miss in the SWAP_TICKS ticks after a model replaced another as the
    # swap's; other misses (the machine is shared) are not asserted on here.
    assert latest(planner, "swap_deadline_misses") == 0
    assert latest(planner, "bundle_errors") == 0 and latest(planner, "plan_errors") == 0


def test_unsigned_and_corrupted_bundles_on_model_are_refused_while_control_continues(loop):
    from std_msgs.msg import UInt8MultiArray

    from loop_ros.core.bundle import MANIFEST, Bundle, bundle_to_bytes, read_bundle
    from loop_ros.core.signing import load_private_key, sign_bundle
    from loop_ros.nodes.trainer import MODEL_QOS

    probe, planner = loop.probe, loop.planner
    good = read_bundle(loop.data_dir / "bundle")
    manifest = {**good.manifest, "version": good.version + 10**6}  # newer than any the trainer publishes here
    newer = Bundle(manifest, {**good.files, MANIFEST: json.dumps(manifest).encode()})
    unsigned = bundle_to_bytes(newer)
    # signed by the trusted key, but its dynamics graph is not the one the signed manifest hashes
    corrupt = bundle_to_bytes(sign_bundle(Bundle(manifest, {**newer.files, "dynamics.onnx": b"not an onnx graph"}),
                                          load_private_key(loop.signing_key)))
    publisher = probe.node.create_publisher(UInt8MultiArray, "model", MODEL_QOS)
    ticks = latest(planner, "ticks")

    def rejections() -> dict:
        return ast.literal_eval(planner[-1]["bundle_rejections"]) if planner else {}

    for data, reason in ((unsigned, "unsigned"), (corrupt, "invalid")):
        deadline = time.monotonic() + 15.0
        while reason not in rejections():  # the loader keeps only the newest bundle: a
            assert time.monotonic() < deadline, f"the {reason} bundle was never refused"  # trainer's may displace ours
            publisher.publish(UInt8MultiArray(data=data))
            probe.spin_for(2.0)
    probe.node.destroy_publisher(publisher)
    log = loop.nodes["planner"].log()
    assert "bundle from the model topic refused: unsigned bundle" in log
    assert "bad bundle from the model topic rejected: sha256 mismatch for dynamics.onnx" in log
    assert set(rejections()) == {"unsigned", "invalid"}
    assert latest(planner, "bundle_errors") == sum(rejections().values())
    probe.wait_for(lambda: latest(planner, "ticks") >= ticks + 75, 10.0, "ticks going on")
    assert int(planner[-1]["model_version"]) > BUNDLE_VERSION and latest(planner, "plan_errors") == 0


def test_sigkill_and_restart_of_the_trainer_restore_the_replay(loop):
    probe, trainer = loop.probe, loop.trainer
    probe.wait_for(lambda: latest(trainer, "replay_transitions") >= 300, 60.0, "300 transitions recorded")
    recorded, version = latest(trainer, "replay_transitions"), latest(trainer, "model_version")
    loop.nodes["trainer"].process.send_signal(signal.SIGKILL)
    loop.nodes["trainer"].process.wait(timeout=10)
    trainer.clear()
    loop.nodes["trainer"] = NodeProcess("trainer", "trainer", loop.params, loop.domain, loop.tmp,
                                        summary=loop.tmp / "trainer.json")
    log = probe.wait_for(lambda: re.search(r"replay: (\d+) transitions", loop.nodes["trainer"].log()), 60.0,
                         "the restarted trainer to load its replay")
    # core/replay.py: a SIGKILL loses at most the open chunk (flush_messages messages), and a
    # lost message costs at most one transition; `recorded` is up to 1 s older than the kill.
    assert int(log.group(1)) >= recorded - FLUSH_MESSAGES
    assert "recovered" in loop.nodes["trainer"].log()  # the killed writer's bag
    # The learner state saved at the killed trainer's last publication (core/learner_state.py).
    resumed = re.search(r"learner state restored from .*: (\d+) transitions", loop.nodes["trainer"].log())
    # It may be a little newer than `recorded` (a diagnostics sample up to 1 s old), and transitions of the
    # lost open chunk may have been learned from: at most the loaded count + one chunk.
    assert resumed and 0 < int(resumed.group(1)) <= int(log.group(1)) + FLUSH_MESSAGES, loop.nodes["trainer"].log()
    newer = probe.wait_for(lambda: latest(trainer, "model_version") > version and trainer[-1], 60.0,
                           "a model of the restarted trainer (versions keep growing)")
    # At least that version: the trainer may publish again 0.3 s later, and diagnostics come once a second.
    probe.wait_for(lambda: latest(loop.planner, "model_version") >= int(newer["model_version"]), 10.0,
                   "it (or a newer one) swapped in")


def test_the_bags_open_with_rosbags_and_hold_what_was_recorded(loop):
    from rosbags.rosbag2 import Reader

    from loop_ros.core.config import TrainerConfig
    from loop_ros.core.replay import ReplayBuffer, bag_directories
    from loop_ros.core.transitions import ReplayTopics
    from loop_ros.core.tasks import make_task

    loop.probe.wait_for(lambda: latest(loop.trainer, "replay_written") >= 400, 20.0, "5 s of messages recorded")
    assert loop.nodes["trainer"].stop() == 0
    summary = json.loads((loop.tmp / "trainer.json").read_text())
    bags = bag_directories(loop.data_dir, print)
    assert len(bags) == 2 and all((bag / "metadata.yaml").is_file() for bag in bags)  # killed one recovered
    types = {"/state": "nav_msgs/msg/Odometry", "/action": "std_msgs/msg/Float64MultiArray",
             "/episode": "std_msgs/msg/String"}
    with Reader(bags[-1]) as reader:  # the restarted trainer's bag
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert {c.topic: c.msgtype for c in reader.connections} == types
        assert reader.message_count == summary["replay_written"]
        state_times = [t for c, t, _ in reader.messages() if c.topic == "/state"]
    # The sim's 50 Hz over the span of the states (DDS discovery may match the topics of a
    # restarted trainer a second or two apart, so the bag's own span can start earlier).
    seconds = (state_times[-1] - state_times[0]) * 1e-9
    assert abs(counts["/state"] - 50.0 * seconds) <= 0.1 * 50.0 * seconds
    assert abs(counts["/episode"] - seconds / 2.0) <= 1.5  # an episode every 100 steps
    task = make_task("rc_car")
    buffer = ReplayBuffer(TrainerConfig(data_dir=str(loop.data_dir)), task, ReplayTopics.for_task(task), print)
    assert sum(1 for _ in buffer.load()) == summary["replay_transitions"]  # the same transitions live and loaded


def test_a_gated_trainer_publishes_no_model_that_drives_worse_than_the_planners_bundle(loop):
    """trainer.gate_episodes: a trainer on a copy of the run's replay (small networks, a few seconds of a
    random model's driving) learns and exports a model, drives it in the simulator against the shipped
    model (the planner's bundle here), and refuses it: nothing goes out on ``model``."""
    from loop_ros.settings import data_path

    gated = loop.tmp / "gated"
    shutil.copytree(loop.data_dir, gated / "replay", ignore=shutil.ignore_patterns("learner.pt*", "bundle", "models"))
    params = params_file(gated / "params.yaml", **{
        **SMALL_NETS, "trainer.data_dir": str(gated / "replay"), "task.bundle": str(data_path("models/rc_car")),
        "security.signing_key": str(loop.signing_key), "trainer.gate_episodes": 1})
    trainer = NodeProcess("trainer", "trainer", params, domain_id(23), gated, summary=gated / "trainer.json")
    try:
        wait_until(lambda: "not published" in trainer.log(), 120.0, "the gate's verdict",
                   lambda: time.sleep(0.5))
    finally:
        assert trainer.stop() == 0
    summary = json.loads((gated / "trainer.json").read_text())
    assert summary["gate_refusals"] >= 1 and summary["model_versions_published"] == [], trainer.log()
    verdict = summary["gate_verdicts"][0]
    assert not verdict["passed"] and verdict["reference"]["crashes"] == 0 and verdict["reference"]["mean_return"] > 300
    assert not (gated / "replay" / "bundle").exists() and (gated / "replay" / "candidate" / "manifest.json").is_file()


def test_loop_ros_up_fresh_learns_from_scratch_and_summarises(tmp_path):
    # With the gate on: learning from scratch, there is no reference, so every model passes unevaluated.
    params = params_file(tmp_path / "params.yaml", **{**SMALL_NETS, "trainer.gate_episodes": 1})
    domain = domain_id(12)
    command = [sys.executable, "-m", "loop_ros.cli", "up", "rc_car", "--fresh", "--duration", "18",
               "--params", str(params), "--domain-id", str(domain), "--json", str(tmp_path / "summary.json")]
    with open(tmp_path / "up.log", "wb") as log:
        process = subprocess.Popen(command, env=ros_environment(domain), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        assert process.wait(timeout=60) == 0, (tmp_path / "up.log").read_text()[-4000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["exit_codes"] == {"sim": 0, "planner": 0, "trainer": 0}
    assert summary["no_model_ticks"] > 0  # no shipped model: it braked until the first learned one
    assert summary["model_swaps"] >= 1 and summary["swaps_rejected"] == 0 and summary["swap_deadline_misses"] is not None
    assert summary["model_version"] in summary["model_versions_published"]
    verdicts = summary["nodes"]["trainer"]["gate_verdicts"]
    assert summary["gate_refusals"] == 0 and summary["gate_passes"] == len(verdicts) == len(summary["model_versions_published"])
    assert all(v["candidate"] is None and v["reference"] is None for v in verdicts)
    assert summary["replay_transitions"] >= 200
    # The trainer is up before the sim's first step and stops after its last: one transition per
    # step, less the states that complete none (the first, each episode's first, those after the
    # planner stopped and the sim's held action ran out: at most a few dozen) and the one still
    # pending. Counted against the sim's steps, not the planner's ticks: a loaded host delays a
    # tick now and then (a timer skips the missed period) while the sim's held action still pairs.
    # The sim publishes one state a step plus a reset state at each episode end (each one unpaired
    # as an episode start); every state completes a transition or is unpaired, the last pending.
    unpaired = summary["replay_unpaired"]
    states = summary["nodes"]["sim"]["steps"] + unpaired.get("episode_start", 0)
    assert abs(states - summary["replay_transitions"] - sum(unpaired.values())) <= 2, unpaired
    fresh = Path(summary["fresh_data_dir"])
    assert len(list(fresh.glob("replay_*/metadata.yaml"))) == 1 and (fresh / "bundle" / "manifest.json").is_file()
    shutil.rmtree(fresh)


def test_models_are_published_after_every_nth_refit_and_the_newest_kept(tmp_path):
    """trainer.refits_per_publish = 2: refits after 20, 40, 60, 80 transitions publish only twice;
    trainer.keep_models = 1: models/ holds a copy of the newest published bundle only."""
    import numpy as np

    from loop_ros.core.config import ArcConfig, EnsembleConfig, SacConfig, SafetyConfig, TrainerConfig
    from loop_ros.core.transitions import Transition
    from loop_ros.core.tasks import make_task
    from loop_ros.core.trainer import LoopTrainer
    from loop_ros.workers.training_worker import TrainingWorker

    schedule = TrainerConfig(seed_steps=20, refits_per_publish=2, keep_models=1)
    ensemble = EnsembleConfig(hidden=(8,), ensemble_size=2, num_elites=1, max_epochs=1, batch_size=16,
                              update_every=20)
    trainer = LoopTrainer(make_task("rc_car"), ArcConfig(horizon=2, population=8), SafetyConfig(), ensemble,
                          SacConfig(hidden=(8,), batch_size=16), "loop", 0, schedule)
    published: list[int] = []
    worker = TrainingWorker(trainer, schedule, tmp_path / "bundle",
                            lambda data, version: published.append(trainer.fits), lambda level, text: None,
                            {"command": "pytest", "seed": 0, "eval_return": None})
    rng = np.random.default_rng(0)
    worker.start()
    try:
        for step in range(1, 81):
            s = rng.normal(size=6)
            worker.offer(Transition(s, rng.uniform(-1.0, 1.0, 2), 0.0, s + 0.01, False))
            deadline = time.monotonic() + 10.0
            while trainer.steps < step and time.monotonic() < deadline:
                time.sleep(0.002)
        deadline = time.monotonic() + 10.0
        while len(published) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert trainer.fits == 4 and published == [2, 4]
    finally:
        worker.stop()
    [kept] = sorted((tmp_path / "models").glob("v*"))
    assert json.loads((kept / "manifest.json").read_text())["version"] == worker.versions_published[-1]
    assert (kept / "manifest.json").read_bytes() == (tmp_path / "bundle" / "manifest.json").read_bytes()

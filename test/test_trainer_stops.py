"""The trainer node stops cleanly at any moment of its cycle, and refuses an unwritable data_dir.

A real trainer process learns from a loaded replay (300 transitions) and from states and
actions the test publishes at 50 Hz. Its fits take 1.5 s (``fit_max_seconds``, no early
stop) and models age out every 1.5 s (``max_model_age_s``). Five stops, SIGINT and SIGTERM in turn:
0.7 s after the replay is loaded (mid-fit: the first fit starts at once), as soon as the log
shows a refit (mid-export: the model is 1.5 s old by then), as soon as it shows a publication
(mid-SAC), and twice at a random moment; every stop is also mid-bag-write (a chunk is open
all the time at 100 messages a second). Each must exit 0 within ``STOP_BOUND_S`` (``TrainingWorker``: at most one export, about 1 s,
and the bag's close) with its summary written, and the next start must load every transition
the stopped one counted: a clean stop closes the open chunk, so it loses nothing. It must also
restore the learner state the stopped one saved (its summary's ``learner_state_steps``).
"""
from __future__ import annotations

import json
import math
import random
import re
import signal
import subprocess
import time

from ros_helpers import NodeProcess, Probe, domain_id, params_file

STOP_BOUND_S = 8.0  # the worker's bound (an export) + the bag's close + rclpy's shutdown, on a loaded 2-core host
LOADED = re.compile(r"replay: (\d+) transitions \(\d+ messages\) loaded")
RESTORED = re.compile(r"learner state restored from \S+: (\d+) transitions, ")
SETTINGS = {
    "ensemble.hidden": [32, 32], "ensemble.ensemble_size": 3, "ensemble.num_elites": 2, "ensemble.batch_size": 64,
    "ensemble.max_epochs": 1000, "ensemble.patience": 1000, "ensemble.update_every": 100,
    "sac.hidden": [16, 16], "sac.batch_size": 32, "trainer.seed_steps": 100, "trainer.publish_after": 0,
    "trainer.refits_per_publish": 1, "trainer.fit_max_seconds": 1.5, "trainer.max_model_age_s": 1.5,
    "trainer.flush_messages": 50, "trainer.nice": 0, "trainer.gate_episodes": 0,  # niced, it starts slowly while other tests run
}


def circle_pose(t: float) -> tuple[float, ...]:
    """The car on the unit circle at 1 rad/s: x, y, yaw, vx_world, vy_world, yaw_rate."""
    return (math.cos(t), math.sin(t), t + math.pi / 2, -math.sin(t), math.cos(t), 1.0)


def write_replay(data_dir, transitions: int) -> None:
    """Bags holding ``transitions`` transitions (and one pending), recorded an hour ago."""
    from builtin_interfaces.msg import Time
    from rclpy.serialization import serialize_message

    from loop_ros.core.config import TrainerConfig
    from loop_ros.core.replay import ReplayBuffer
    from loop_ros.core.transitions import ReplayTopics
    from loop_ros.core.tasks import make_task
    from loop_ros.nodes.messages import float_array, odometry_from_pose

    task = make_task("rc_car")
    buffer = ReplayBuffer(TrainerConfig(data_dir=str(data_dir)), task, ReplayTopics.for_task(task), lambda *_: None)
    start = time.time_ns() - 3600 * 10**9
    action = serialize_message(float_array((0.5, 0.1)))
    for i in range(transitions + 2):
        ns = start + i * 20_000_000
        buffer.record("/action", ns - 1_000_000, action)
        stamp = Time(sec=ns // 10**9, nanosec=ns % 10**9)
        buffer.record("/state", ns, serialize_message(odometry_from_pose(circle_pose(0.02 * i), stamp)))
    buffer.close()


def publish_at_50_hz(probe: Probe) -> None:
    """The loop the trainer records, from the probe: an action, then a state, every 20 ms."""
    from nav_msgs.msg import Odometry
    from std_msgs.msg import Float64MultiArray

    from loop_ros.nodes.messages import float_array, odometry_from_pose

    states = probe.node.create_publisher(Odometry, "state", 100)
    actions = probe.node.create_publisher(Float64MultiArray, "action", 100)
    started = time.monotonic()

    def tick() -> None:
        actions.publish(float_array((0.5, 0.1)))
        states.publish(odometry_from_pose(circle_pose(time.monotonic() - started),
                                          probe.node.get_clock().now().to_msg()))

    probe.node.create_timer(0.02, tick)


def test_sigint_and_sigterm_at_any_moment_exit_0_and_keep_the_replay(tmp_path):
    data_dir = tmp_path / "replay"
    write_replay(data_dir, 300)
    params = params_file(tmp_path / "params.yaml", **SETTINGS, **{"trainer.data_dir": str(data_dir)})
    domain = domain_id(31)
    probe = Probe(domain)
    publish_at_50_hz(probe)
    moments = [0.7, "ensemble refit on", "published model version"] + [round(random.uniform(0.3, 2.5), 2)
                                                                       for _ in range(2)]
    expected, saved_steps, trainer, latencies = 300, None, None, []
    try:
        for i, moment in enumerate(moments):
            summary_path = tmp_path / f"trainer{i}.json"
            trainer = NodeProcess("trainer", f"trainer{i}", params, domain, tmp_path, summary=summary_path)
            loaded = probe.wait_for(lambda: LOADED.search(trainer.log()), 60.0, "the trainer to load its replay")
            # The last transition of a stopped run is still pending (released one state late);
            # the next run's first state is a new run, so it is never released.
            assert int(loaded.group(1)) == expected, (i, moments, trainer.log())
            # The learner state the stopped trainers saved, restored before the replay was loaded (none
            # while no trainer has learned anything: a learner that never learned is not saved).
            restored = RESTORED.search(trainer.log())
            if saved_steps is None:
                assert restored is None and "no learner state" in trainer.log(), (i, trainer.log())
            else:
                assert restored and int(restored.group(1)) == saved_steps, (i, saved_steps, trainer.log())
            if isinstance(moment, str):
                probe.wait_for(lambda: moment in trainer.log(), 30.0, f"'{moment}' in the log")
            else:
                probe.spin_for(moment)
            signum = (signal.SIGINT, signal.SIGTERM)[i % 2]
            asked = time.monotonic()
            trainer.process.send_signal(signum)
            try:
                code = trainer.process.wait(timeout=30.0)
            except subprocess.TimeoutExpired:
                code = trainer.stop()
            latency = time.monotonic() - asked
            latencies.append(round(latency, 2))
            log = trainer.log()
            assert code == 0 and latency <= STOP_BOUND_S, (i, moments, signum, code, latency, log)
            assert "terminate called" not in log and "Traceback" not in log, log
            summary = json.loads(summary_path.read_text())
            assert summary["replay_write_errors"] == 0 and summary["replay_dropped"] == 0
            assert summary["transitions"] <= summary["replay_transitions"]
            assert summary["learner_state_errors"] == 0
            expected, saved_steps = summary["replay_transitions"], summary["learner_state_steps"]
        assert expected > 300 + 4 * 50  # it recorded between the stops
        print(f"stops at {moments}: latencies {latencies} s")
    finally:
        if trainer is not None:
            trainer.stop()
        probe.close()


def test_an_unwritable_data_dir_stops_the_trainer_with_one_line_and_exit_2(tmp_path):
    (tmp_path / "file").write_text("a regular file, so nothing can be created under it, not even by root")
    params = params_file(tmp_path / "params.yaml", **{"trainer.data_dir": str(tmp_path / "file" / "replay")})
    trainer = NodeProcess("trainer", "trainer", params, domain_id(32), tmp_path)
    assert trainer.process.wait(timeout=60.0) == 2
    lines = [line for line in trainer.log().splitlines() if line.strip()]
    assert lines[-1] == (f"invalid settings: trainer.data_dir {tmp_path / 'file' / 'replay'} is not writable: "
                         f"[Errno 20] Not a directory: '{tmp_path / 'file' / 'replay'}'"), lines
    assert "Traceback" not in trainer.log()

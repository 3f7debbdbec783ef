"""Replay buffer on rosbag2: transitions rebuilt from hand-made message streams, bags that
rosbags opens with the expected topics and counts, rotation, recovery of half-written
bags, and the crash-loss bound under SIGKILL of the writing process."""
from __future__ import annotations

import itertools
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from rosbags.rosbag2 import Reader  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from loop_ros.core.config import TrainerConfig  # noqa: E402
from loop_ros.core.replay import ReplayBuffer, bag_directories  # noqa: E402
from loop_ros.core.transitions import ReplayTopics, no_command  # noqa: E402
from loop_ros.core.tasks.rc_car import RcCarTask, obs_from_pose  # noqa: E402
from loop_ros.nodes.messages import float_array, odometry_from_pose  # noqa: E402

T0 = 1_700_000_000_000_000_000  # receive times: ns since the epoch
MS = 1_000_000
TASK = RcCarTask()
TOPICS = ReplayTopics.for_task(TASK)


def pose(i: float) -> tuple[float, ...]:
    """A distinct valid pose (x, y, yaw, vx_world, vy_world, yaw_rate) per i."""
    return (0.1 * i, 1.0 - 0.05 * i, 0.3 * i, 1.0 + 0.1 * i, -0.2 * i, 0.05 * i)


_STAMPS_MS = itertools.count(1)


def state(p, stamp_ms: int | None = None) -> bytes:
    """Odometry of pose ``p`` stamped ``stamp_ms`` after T0 (default: 1 ms after the previous default)."""
    ns = T0 + (next(_STAMPS_MS) if stamp_ms is None else stamp_ms) * MS
    return serialize_message(odometry_from_pose(p, Time(sec=ns // 10**9, nanosec=ns % 10**9)))


def action(a) -> bytes:
    return serialize_message(float_array(a))


EPISODE = serialize_message(String(data='{"episode": 0}'))


def replay(data_dir: Path, warnings: list | None = None, **settings) -> ReplayBuffer:
    cfg = TrainerConfig(data_dir=str(data_dir), **settings)
    log = (lambda level, text: warnings.append(text)) if warnings is not None else (lambda level, text: None)
    return ReplayBuffer(cfg, TASK, TOPICS, log)


def drain(buffer: ReplayBuffer, timeout_s: float = 5.0) -> None:
    end = time.monotonic() + timeout_s
    while buffer.recorder.pending() and time.monotonic() < end:
        time.sleep(0.005)
    assert buffer.recorder.pending() == 0


# The hand-made stream: (ms after T0 received, topic, bytes); states are stamped when they
# were sent. Transitions expected (module docstring of core/replay.py): the newest valid
# action before s'; none from an episode's terminal state to the next episode's first state
# (same stamp), across a stamp gap over max_gap_s (0.2 s), or with an action received more
# than max_gap_s before s; a trainer that fell behind keeps its transitions; an invalid
# message is rejected and as if never received. Each is released one state late.
A0, A1, A2, A3 = (0.5, 0.1), (-0.2, 0.3), (0.9, -0.7), (0.0, 1.0)
NAN_POSE = (math.nan, 0.0, 0.0, 0.0, 0.0, 0.0)
STREAM = [
    (0, "/action", action(A0)),
    (20, "/state", state(pose(0), 20)),
    (40, "/state", state(pose(1), 40)),       # T1: s0, A0, s1
    (45, "/action", action(A1)),
    (60, "/state", state(pose(2), 60)),       # T2: s1, A1, s2 (the episode's terminal state)
    (61, "/state", state(pose(3), 60)),       # the next episode's first state, same stamp: none
    (70, "/episode", EPISODE),                # stamped states do not need it
    (100, "/state", state(pose(4), 100)),     # T3: s3, A1 (55 ms old), s4
    (500, "/state", state(pose(5), 500)),     # 400 ms gap: none
    (520, "/state", state(NAN_POSE, 520)),    # invalid: rejected
    (540, "/state", state(pose(6), 540)),     # A1 was 455 ms old at s5: none
    (560, "/state", state(pose(7), 560)),     # A1 was 495 ms old at s6: none
    (565, "/action", action((1.0, 0.0, 0.0))),  # wrong size: rejected (the sim brakes), recorded as no command
    (580, "/state", state(pose(8), 580)),     # no valid action since 565: none
    (585, "/action", action(A2)),
    (600, "/state", state(pose(9), 600)),     # T4: s8, A2, s9
    (605, "/action", action(A3)),
    (900, "/state", state(pose(10), 620)),    # the trainer fell behind 280 ms: T5: s9, A3, s10
    (901, "/state", state(pose(11), 640)),    # releases T5 (A3 was 295 ms old at s10: none)
]
REJECTED = 2  # the NaN state and the wrong-sized action
NOT_STORED = 1  # the NaN state (the action is stored as an empty one, no command)
EXPECTED = [(0, A0, 1), (1, A1, 2), (3, A1, 4), (8, A2, 9), (9, A3, 10)]  # (s index, action, s' index)


def check_transitions(transitions) -> None:
    assert len(transitions) == len(EXPECTED)
    for t, (i, a, j) in zip(transitions, EXPECTED):
        s, s2 = obs_from_pose(*pose(i)), obs_from_pose(*pose(j))
        np.testing.assert_allclose(t.s, s, atol=1e-12)
        np.testing.assert_allclose(t.s2, s2, atol=1e-12)
        assert tuple(t.a) == a and t.done is False
        assert t.r == pytest.approx(float(TASK.reward(s, np.array(a), s2)), abs=1e-12)


def record_stream(buffer: ReplayBuffer, stream) -> list:
    return [t for ms, topic, data in stream for t in buffer.record(topic, T0 + ms * MS, data)]


def test_transitions_are_rebuilt_live_and_again_on_load(tmp_path):
    first = replay(tmp_path)
    assert list(first.load()) == []
    check_transitions(record_stream(first, STREAM))
    first.close()
    second = replay(tmp_path)
    check_transitions(list(second.load()))
    stats = second.stats()
    assert stats["replay_transitions"] == 5 and second.loaded_messages == len(STREAM) - NOT_STORED
    assert {k: v for k, v in stats.items() if k.startswith("replay_unpaired_")} == {
        "replay_unpaired_no_previous": 1, "replay_unpaired_episode_start": 1, "replay_unpaired_state_gap": 1,
        "replay_unpaired_action_gap": 3, "replay_unpaired_no_action": 1}
    assert {k: v for k, v in first.stats().items() if k.startswith("replay_rejected_")} == {
        "replay_rejected_state": 1, "replay_rejected_action": 1}


def test_a_fleets_streams_pair_apart_and_any_trainer_loads_them(tmp_path):
    """Two robots' streams interleaved (``trainer.robots``): each gives the transitions it gives
    alone, none pairs one robot's state with the other's, and the bags load in a fleet's trainer
    and in a one-robot trainer alike (it uses every stream it finds)."""
    robots = ("/car0", "/car1")
    streams = [ReplayTopics.for_task(TASK, *(f"{ns}/{role}" for role in ("state", "action", "episode")))
               for ns in robots]
    fleet = ReplayBuffer(TrainerConfig(data_dir=str(tmp_path)), TASK, streams, lambda level, text: None)
    interleaved = sorted((ms + k, f"{ns}{topic}", data) for k, ns in enumerate(robots) for ms, topic, data in STREAM)
    live = record_stream(fleet, interleaved)
    fleet.close()
    expected = [(obs_from_pose(*pose(i)), a, obs_from_pose(*pose(j))) for i, a, j in EXPECTED]

    def found(transitions, s, a, s2):
        return sum(np.allclose(t.s, s) and np.allclose(t.s2, s2) and tuple(t.a) == a for t in transitions)

    for transitions in (live, list(ReplayBuffer(TrainerConfig(data_dir=str(tmp_path)), TASK, streams,
                                                lambda level, text: None).load()),
                        list(replay(tmp_path).load())):
        assert len(transitions) == 2 * len(EXPECTED)
        assert all(found(transitions, *transition) == 2 for transition in expected)  # once per robot
    assert fleet.stats()["replay_rejected_state"] == 2


@pytest.mark.parametrize("bad", [b"\x00\x01garbage", state((1e300, 0.0, 0.0, 0.0, 0.0, 0.0)),
                                 state((0.0, 0.0, 0.0, 2e6, 0.0, 0.0)), action((1.5, 0.0)), action((math.inf, 0.0))],
                         ids=["undecodable", "huge", "beyond-1e6", "out-of-bounds-action", "inf-action"])
def test_a_rejected_message_is_counted_never_stored_and_as_if_never_received(tmp_path, bad):
    buffer = replay(tmp_path)
    topic = "/action" if bad[:4] == action(A0)[:4] and len(bad) == len(action(A0)) else "/state"
    stream = [(0, "/action", action(A0)), (20, "/state", state(pose(0))), (30, "/action", b"\x00\x01garbage"),
              (40, topic, bad), (45, "/action", action(A1)), (60, "/state", state(pose(1))),
              (80, "/state", state(pose(2)))]
    [transition] = record_stream(buffer, stream)  # s0 -> s1 (s1 -> s2 is still pending)
    np.testing.assert_allclose(transition.s, obs_from_pose(*pose(0)), atol=1e-12)
    assert tuple(transition.a) == A1
    assert sum(n for k, n in buffer.stats().items() if k.startswith("replay_rejected_")) == 2
    buffer.close()
    assert replay(tmp_path).load() and sum(1 for _ in replay(tmp_path).load()) == 1
    with Reader(bag_directories(tmp_path, print)[0]) as reader:  # a rejected action is stored as no command
        assert reader.message_count == len(stream) - (0 if topic == "/action" else 1)
        stored = [bytes(data) for connection, _, data in reader.messages() if connection.topic == "/action"]
    assert stored.count(no_command()) == (2 if topic == "/action" else 1)


def episode_record(stamp_ms: int, terminated: bool) -> bytes:
    ns = T0 + stamp_ms * MS
    return serialize_message(String(data=f'{{"episode": 0, "terminated": {str(terminated).lower()}, "stamp_ns": {ns}}}'))


@pytest.mark.parametrize("terminated", [True, False], ids=["crash", "time-limit"])
@pytest.mark.parametrize("record_first", [True, False], ids=["record-first", "reset-state-first"])
def test_an_episode_ended_by_a_crash_reaches_the_replay_as_done(tmp_path, terminated, record_first):
    """The sim's record names the terminal state by its stamp; either topic may arrive first."""
    buffer = replay(tmp_path)
    record = (41, "/episode", episode_record(40, terminated))
    reset = (42, "/state", state(pose(3), 40))
    stream = [(0, "/action", action(A0)), (20, "/state", state(pose(0), 20)), (40, "/state", state(pose(1), 40)),
              *((record, reset) if record_first else (reset, record)),
              (60, "/state", state(pose(4), 60)), (80, "/state", state(pose(5), 80))]
    transitions = record_stream(buffer, stream)
    assert [t.done for t in transitions] == [terminated, False]
    for t, i in zip(transitions, (1, 4)):  # s' of the terminal transition, then of the next episode's first
        np.testing.assert_allclose(t.s2, obs_from_pose(*pose(i)), atol=1e-12)
    buffer.close()
    assert [t.done for t in replay(tmp_path).load()] == [terminated, False]


def test_bags_are_rosbag2_v9_mcap_with_the_topics_and_counts(tmp_path):
    buffer = replay(tmp_path)
    record_stream(buffer, STREAM)
    buffer.close()
    [bag] = bag_directories(tmp_path, print)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == "mcap"
    assert meta["message_count"] == len(STREAM) - NOT_STORED == 18
    with Reader(bag) as reader:
        counts = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        first = next(reader.messages())
    assert counts == {"/state": ("nav_msgs/msg/Odometry", 12), "/action": ("std_msgs/msg/Float64MultiArray", 5),
                      "/episode": ("std_msgs/msg/String", 1)}
    assert (first[0].topic, first[1], bytes(first[2])) == ("/action", T0, action(A0))  # the wire bytes, as received


def test_bags_rotate_by_size_and_by_time_and_transitions_span_them(tmp_path):
    pair = len(action(A0)) + len(state(pose(0)))
    buffer = replay(tmp_path / "size", max_bag_mb=2 * pair / 1e6)  # two (action, state) pairs per bag
    stream = [item for i in range(20) for item in ((40 * i, "/action", action(A0)), (40 * i + 20, "/state",
                                                                                      state(pose(i))))]
    assert len(record_stream(buffer, stream)) == 18  # 20 states: 19 transitions, the last one still pending
    buffer.close()
    bags = bag_directories(tmp_path / "size", print)
    assert len(bags) == 10
    assert all(yaml.safe_load((b / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["message_count"] == 4
               for b in bags)
    assert len(list(replay(tmp_path / "size").load())) == 18  # transitions across bag boundaries too

    timed = replay(tmp_path / "time", max_bag_seconds=0.05)
    timed.record("/action", T0, action(A0))
    time.sleep(0.1)
    timed.record("/action", T0 + MS, action(A0))
    timed.close()
    assert len(bag_directories(tmp_path / "time", print)) == 2


def alternating(messages: int) -> list:
    """Actions at even i, states at odd i, 10 ms apart: messages // 2 states, one transition fewer
    (of which the last is still pending: released one state late)."""
    return [(10 * i, "/action", action(A0)) if i % 2 == 0 else (10 * i, "/state", state(pose(i)))
            for i in range(messages)]


def half_written_copy(tmp_path: Path, messages: int = 25, flush_messages: int = 10, close: bool = True) -> Path:
    """Record ``messages`` (``alternating``), wait until the writer has them all, and copy the
    bag as a writer killed now would leave it: the closed chunks, no footer, no metadata.yaml."""
    buffer = replay(tmp_path / "live", flush_messages=flush_messages, flush_interval_s=60.0)
    record_stream(buffer, alternating(messages))
    drain(buffer)
    [bag] = bag_directories(tmp_path / "live", print)
    shutil.copytree(bag, tmp_path / "crashed" / bag.name)
    buffer.close()
    return tmp_path / "crashed" / bag.name


def load(data_dir: Path, warnings: list | None = None) -> tuple[ReplayBuffer, list]:
    buffer = replay(data_dir, [] if warnings is None else warnings)
    return buffer, list(buffer.load())


# A chunk of 10 messages (5 actions, 5 states) ends with one message index record per
# channel: 9 + 2 + 4 + 5 * 16 = 95 bytes each. Cutting 1 byte breaks only the last index
# record; cutting 300 bytes reaches into the second chunk's last message (a state): the 9
# complete records before it are kept too.
@pytest.mark.parametrize("cut_bytes, messages", [(0, 20), (1, 20), (300, 19)])
def test_a_half_written_bag_is_recovered_up_to_its_last_complete_record(tmp_path, cut_bytes, messages):
    bag = half_written_copy(tmp_path)  # 25 messages: two closed chunks of 10, 5 never written
    assert not (bag / "metadata.yaml").exists()
    mcap = next(bag.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:len(mcap.read_bytes()) - cut_bytes])
    warnings: list[str] = []
    buffer, transitions = load(bag.parent, warnings)
    assert buffer.loaded_messages == messages and len(transitions) == messages // 2 - 2  # the last pending
    assert warnings == [f"replay: recovered {messages} messages of the unfinished bag {bag.name}"]
    with Reader(bag) as reader:  # now a closed, indexed bag
        assert reader.message_count == messages
    buffer, transitions = load(bag.parent, warnings)
    assert len(warnings) == 1 and len(transitions) == messages // 2 - 2


def test_a_damaged_end_is_recovered_and_an_unreadable_bag_skipped(tmp_path):
    buffer = replay(tmp_path / "data")
    record_stream(buffer, alternating(25))
    buffer.close()
    [bag] = bag_directories(tmp_path / "data", print)
    mcap = next(bag.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:-100])  # footer and part of the summary gone; every chunk intact
    garbage = bag.parent / "replay_00000000T000000_000000000"  # sorts first
    garbage.mkdir()
    (garbage / "garbage.mcap").write_bytes(b"\x89MCAP0\r\nnot a record")
    warnings: list[str] = []
    buffer, transitions = load(bag.parent, warnings)
    assert buffer.loaded_messages == 25 and len(transitions) == 10
    assert warnings[0] == f"replay: skipping {garbage.name}: it does not open and holds no complete chunk"


def test_an_interrupted_recovery_is_redone(tmp_path):
    bag = half_written_copy(tmp_path)
    partial = bag.with_name(bag.name + ".partial")
    bag.rename(partial)
    bag.mkdir()  # the recovered copy had just been started when the process died
    (bag / f"{bag.name}.mcap").write_bytes(b"\x89MCAP0\r\n")
    buffer, transitions = load(bag.parent)
    assert buffer.loaded_messages == 20 and not partial.exists()


KILLED_WRITER = """
import sys, time
sys.path.insert(0, {test_dir!r})
from test_replay import MS, T0, alternating, drain, replay
from pathlib import Path
buffer = replay(Path({data_dir!r}), flush_messages={flush}, flush_interval_s={interval})
for ms, topic, data in alternating({messages}):
    buffer.record(topic, T0 + ms * MS, data)
drain(buffer)
print("written", flush=True)
time.sleep({wait})
print("waited", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("interval, wait, expected", [(60.0, 0.0, 1000), (0.2, 0.6, 1030)],
                         ids=["count-bound", "time-bound"])
def test_sigkill_of_the_writer_loses_at_most_the_open_chunk(tmp_path, interval, wait, expected):
    messages, flush = 1030, 50
    code = KILLED_WRITER.format(test_dir=str(Path(__file__).parent), data_dir=str(tmp_path), flush=flush,
                                interval=interval, messages=messages, wait=wait)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        assert child.stdout.readline().strip() == "written"
        if wait:
            assert child.stdout.readline().strip() == "waited"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    buffer, _ = load(tmp_path)
    # The bound of core/replay.py: at most the open chunk, min(flush_messages, the last
    # flush_interval_s of messages); the writer had every message, so the queue was empty.
    assert messages - flush <= buffer.loaded_messages <= messages
    assert buffer.loaded_messages == expected  # 20 full chunks of 50; or all once a time flush ran


def test_settings_are_checked():
    with pytest.raises(ValueError, match="trainer.flush_messages must be >= 1"):
        TrainerConfig(flush_messages=0)
    with pytest.raises(ValueError, match="trainer.nice must be in"):
        TrainerConfig(nice=20)


# ---------------------------------------------------------------- damaged bags, full disks


def mcap_chunks(raw: bytes) -> list[tuple[int, list[int]]]:
    """(position of each chunk record, positions of the message records inside it) of an intact MCAP file."""
    import struct

    chunks, position = [], 8
    while position + 9 <= len(raw):
        opcode, length = struct.unpack_from("<BQ", raw, position)
        if opcode == 0x06:
            inner, end, messages = position + 9 + 40, position + 9 + length, []
            while inner < end:
                inner_opcode, inner_length = struct.unpack_from("<BQ", raw, inner)
                messages += [inner] if inner_opcode == 0x05 else []
                inner += 9 + inner_length
            chunks.append((position, messages))
        position += 9 + length
    return chunks


def damaged(raw: bytes, position: int, data: bytes) -> bytes:
    return raw[:position] + data + raw[position + len(data):]


# A half-written bag of 35 messages: chunks of 10 at [0], [1], [2], 5 never written.
# Each case damages it and names the messages still recovered.
DAMAGE = {
    "a message's length": (lambda raw, chunks: damaged(raw, chunks[0][1][3] + 1, (2**40).to_bytes(8, "little")), 23),
    "a record's opcode": (lambda raw, chunks: damaged(raw, chunks[1][1][5], b"\xee"), 25),
    "a chunk's length": (lambda raw, chunks: damaged(raw, chunks[1][0] + 1, (2**40).to_bytes(8, "little")), 30),
    "garbage between chunks": (lambda raw, chunks: damaged(raw, chunks[1][0] - 100, b"\xff" * 40), 30),  # over an index record's header
    "a message's channel": (lambda raw, chunks: damaged(raw, chunks[2][1][0] + 9, b"\x63\x00"), 29),
    "a cut inside a message": (lambda raw, chunks: raw[:chunks[2][1][4] + 20], 24),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_record_costs_only_itself_and_the_rest_of_its_chunk(tmp_path, case):
    bag = half_written_copy(tmp_path, messages=35)
    mcap = next(bag.glob("*.mcap"))
    raw = mcap.read_bytes()
    damage, expected = DAMAGE[case]
    mcap.write_bytes(damage(raw, mcap_chunks(raw)))
    warnings: list[str] = []
    buffer, _ = load(bag.parent, warnings)
    assert buffer.loaded_messages == expected
    [warning] = warnings
    assert warning.startswith(f"replay: recovered {expected} messages of the unfinished bag {bag.name}")
    assert ("damage skipped" in warning) == (case != "a cut inside a message")  # a cut is no damage
    assert load(bag.parent)[0].loaded_messages == expected  # rewritten as a closed bag


def test_a_closed_bag_with_a_damaged_chunk_keeps_the_chunks_after_it(tmp_path):
    buffer = replay(tmp_path, flush_messages=10, flush_interval_s=60.0)
    record_stream(buffer, alternating(35))
    buffer.close()
    [bag] = bag_directories(tmp_path, print)
    mcap = next(bag.glob("*.mcap"))
    raw = mcap.read_bytes()
    mcap.write_bytes(damaged(raw, mcap_chunks(raw)[1][1][3] + 1, (2**40).to_bytes(8, "little")))
    warnings: list[str] = []
    buffer, _ = load(tmp_path, warnings)
    assert buffer.loaded_messages == 10 + 3 + 10 + 5 and len(warnings) == 1  # not just the 10 before it


def test_no_damage_makes_the_scan_or_the_load_raise(tmp_path):
    """Random overwrites, insertions, deletions and cuts of a half-written bag: the scan returns
    what it can, every message on a known channel, and loading never raises."""
    from loop_ros.core.mcap_scan import scan_unfinished_mcap

    bag = half_written_copy(tmp_path, messages=35)
    mcap = next(bag.glob("*.mcap"))
    raw = mcap.read_bytes()
    rng = np.random.default_rng(0)
    for trial in range(300):
        data = bytearray(raw)
        for _ in range(int(rng.integers(1, 4))):
            at, size = int(rng.integers(0, len(data))), int(rng.integers(1, 64))
            garbage = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            kind = rng.integers(4)
            if kind == 0:
                data[at:at + size] = garbage[:len(data) - at]
            elif kind == 1:
                data[at:at] = garbage
            elif kind == 2:
                del data[at:at + size]
            else:
                del data[at:]
        channels, messages, _ = scan_unfinished_mcap(bytes(data))
        assert all(cid in channels for cid, _, _ in messages)
        if trial % 15 == 0:
            shutil.rmtree(tmp_path / "fuzz", ignore_errors=True)
            (tmp_path / "fuzz" / bag.name).mkdir(parents=True)
            (tmp_path / "fuzz" / bag.name / mcap.name).write_bytes(bytes(data))
            load(tmp_path / "fuzz")  # never raises


def test_a_full_disk_is_counted_logged_once_a_second_and_loses_only_what_failed(tmp_path, monkeypatch):
    import errno

    from rosbags.rosbag2 import Writer

    logged: list[tuple[str, str]] = []
    buffer = ReplayBuffer(TrainerConfig(data_dir=str(tmp_path), flush_messages=10, flush_interval_s=60.0), TASK,
                          TOPICS, lambda level, text: logged.append((level, text)))
    stream = alternating(400)
    record_stream(buffer, stream[:20])  # two chunks on disk
    drain(buffer)
    write = Writer.write

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Writer, "write", full)
    started = time.monotonic()
    for i in range(20, 270, 10):  # 2.5 s of a full disk
        record_stream(buffer, stream[i:i + 10])
        time.sleep(0.1)
    drain(buffer)
    seconds = time.monotonic() - started
    monkeypatch.setattr(Writer, "write", write)
    time.sleep(1.0)  # the recorder retries a second after the last failure
    record_stream(buffer, stream[270:])
    buffer.close()
    stats = buffer.stats()
    errors = [text for level, text in logged if level == "error"]
    assert 2 <= stats["replay_write_errors"] <= seconds + 1  # one attempt a second
    assert 2 <= len(errors) <= seconds + 2  # at most one line a second, and one at close if any went unlogged
    assert all("No space left on device" in text and "messages lost so far" in text for text in errors)
    assert stats["replay_lost"] == 250 and stats["replay_written"] == 20 + 130 and stats["replay_dropped"] == 0
    assert load(tmp_path)[0].loaded_messages == 150  # the dropped bag's closed chunks are recovered


def test_an_unwritable_data_dir_is_a_config_error(tmp_path):
    from loop_ros.core.config import ConfigError

    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"trainer.data_dir .*file/replay is not writable: .*Not a directory"):
        replay(tmp_path / "file" / "replay")
    assert not list(tmp_path.glob("**/.write-probe-*"))
    replay(tmp_path / "fine")
    assert (tmp_path / "fine").is_dir() and not list((tmp_path / "fine").iterdir())  # the probe file is gone

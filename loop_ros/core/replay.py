"""Replay buffer on rosbag2 (DESIGN.md section 7): raw messages on disk, transitions in memory.

What is stored is what went over the wire: the CDR bytes of every ``state``, ``action`` and
``episode`` message with its receive time (ns since the epoch), appended to MCAP bags
(rosbag2 version 9, written with ``rosbags``; ``ros2 bag info`` and Foxglove open them) in
``data_dir``. Transitions (s, a, r, s', done) are rebuilt from that stream by
``TransitionAssembler``, live and on load alike, so a restarted trainer sees the same data:

* s, s': observations of two consecutive ``state`` messages (``obs_from_pose`` of the task
  for nav_msgs/Odometry, else the Float64MultiArray itself);
* a: the newest valid ``action`` received before s' (the sim holds the latest action, so
  this is what it applied, up to the ~1 ms in which both receive a new action);
* r = task.reward(s, a, s');
* done is always False. When an episode ends, the sim publishes its terminal state and
  then the next episode's first state, both with the tick's stamp: the terminal transition
  is kept, and a state stamped no later than the one before it starts a new run (the
  stream does not tell a crash from the time limit, so every end is treated as a time
  limit). The boundary is in the state stream itself because the order in which one
  subscriber takes messages of two topics is not guaranteed; only states without a
  stamp (Float64MultiArray) rely on the ``episode`` message to end a run.
* no transition spans an invalid state, a gap of more than ``max_gap_s`` between the stamps
  of s and s' (receive times without stamps), or an action received more than
  ``max_gap_s`` before s (the sim stops holding an action after ``sim.action_timeout_s``).
  Stamps, not receive times, measure the state gap, so a trainer that falls behind for a
  while (its messages arrive late and in a burst) keeps every transition. States that
  complete no transition are counted by reason (``replay_unpaired_*``).

Crash-loss bound. ``BagRecorder`` writes in its own thread from a bounded queue (full: the
message is dropped and counted; the subscriber never waits for the disk). Messages collect
in the bag's open MCAP chunk; the chunk is closed and flushed to the file once it holds
``flush_messages`` messages or its oldest message is ``flush_interval_s`` old. A process
killed at any moment (SIGKILL) therefore loses at most the open chunk, i.e. at most
min(``flush_messages``, the messages of the last ``flush_interval_s`` seconds) messages,
plus whatever was still queued (empty unless the disk stalls; never more than
``queue_size``). A lost state message costs at most one transition. Flushing hands the
bytes to the OS, so this holds for a process crash, not a power loss. The half-written bag
(no footer, no ``metadata.yaml``) is recovered on the next load: its complete chunks are
rewritten to a closed bag under the same name; a bag with nothing readable is skipped with
a warning. Bags rotate at ``max_bag_mb`` of payload or ``max_bag_seconds``.

Relies on rosbags 0.11.9's MCAP writer closing a chunk with ``storage.close_chunk()``.
"""
from __future__ import annotations

import importlib
import math
import queue
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from loop_ros.core.config import TrainerConfig
from loop_ros.core.mcap_scan import scan_unfinished_mcap
from loop_ros.core.tasks import TASK_MODULES
from loop_ros.core.tasks.base import Task

ODOMETRY = "nav_msgs/msg/Odometry"
FLOAT_ARRAY = "std_msgs/msg/Float64MultiArray"
STRING = "std_msgs/msg/String"
ROLES = ("state", "action", "episode")
BAG_PREFIX = "replay_"
PARTIAL_SUFFIX = ".partial"  # a half-written bag while its recovered copy is being written
QUATERNION_NORM_TOLERANCE = 1e-3
Log = Callable[[str, str], None]  # (level, text)

_typestore = None


def typestore():
    """The ROS 2 Kilted message definitions (bytes equal ``rclpy.serialization``'s CDR)."""
    global _typestore
    if _typestore is None:
        _typestore = get_typestore(Stores.ROS2_KILTED)
    return _typestore


@dataclass(frozen=True)
class ReplayTopics:
    """Resolved topic names of the three roles and the state's message type."""

    state: str = "/state"
    action: str = "/action"
    episode: str = "/episode"
    state_type: str = ODOMETRY

    @classmethod
    def for_task(cls, task: Task, state: str = "/state", action: str = "/action",
                 episode: str = "/episode") -> ReplayTopics:
        """Topic names as given; the state type is Odometry for tasks with ``obs_from_pose``."""
        return cls(state, action, episode, ODOMETRY if task_obs_from_pose(task) else FLOAT_ARRAY)

    def types(self) -> dict[str, str]:
        """topic -> message type, in role order."""
        return {self.state: self.state_type, self.action: FLOAT_ARRAY, self.episode: STRING}

    def role(self, topic: str) -> str | None:
        return {self.state: "state", self.action: "action", self.episode: "episode"}.get(topic)


# ---------------------------------------------------------------- messages -> transitions


def task_obs_from_pose(task: Task) -> Callable | None:
    """The task module's ``obs_from_pose`` (its states travel as nav_msgs/Odometry), or None
    (its states travel as a Float64MultiArray of the observation)."""
    return getattr(importlib.import_module(TASK_MODULES[task.name]), "obs_from_pose", None)


def pose_from_odometry(msg) -> np.ndarray | None:
    """nav_msgs/Odometry (REP-105: twist in the body frame) -> world pose ``(6,)`` (x, y, yaw,
    vx_world, vy_world, yaw_rate); None when a field is not finite or the orientation is
    not a unit quaternion. Works on rosbags' and rclpy's message objects alike."""
    q, p, v = msg.pose.pose.orientation, msg.pose.pose.position, msg.twist.twist
    raw = np.array([p.x, p.y, q.x, q.y, q.z, q.w, v.linear.x, v.linear.y, v.angular.z])
    unit = abs(math.sqrt(q.x**2 + q.y**2 + q.z**2 + q.w**2) - 1.0) <= QUATERNION_NORM_TOLERANCE
    if not np.all(np.isfinite(raw)) or not unit:
        return None
    yaw = math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y**2 + q.z**2))
    cos_yaw, sin_yaw = math.cos(yaw), math.sin(yaw)
    return np.array([p.x, p.y, yaw, cos_yaw * v.linear.x - sin_yaw * v.linear.y,
                     sin_yaw * v.linear.x + cos_yaw * v.linear.y, v.angular.z])


def finite_vector(values, size: int) -> np.ndarray | None:
    """``values`` as float64 ``(size,)``, or None when the size is wrong or a value is not finite."""
    array = np.asarray(values, dtype=float)
    return array if array.shape == (size,) and np.all(np.isfinite(array)) else None


def _decoded(data: bytes, msgtype: str):
    try:
        return typestore().deserialize_cdr(data, msgtype)
    except Exception:  # rosbags raises assorted errors on malformed CDR
        return None


@dataclass(frozen=True)
class Transition:
    s: np.ndarray  # (S,)
    a: np.ndarray  # (A,)
    r: float
    s2: np.ndarray  # (S,)
    done: bool


class TransitionAssembler:
    """Turns the recorded message stream, in receive order, into transitions (module docstring)."""

    def __init__(self, task: Task, topics: ReplayTopics, max_gap_s: float):
        self.task, self.topics, self.obs_from_pose = task, topics, task_obs_from_pose(task)
        self.max_gap_ns = int(max_gap_s * 1e9)
        self._state: _StateRecord | None = None
        self._action: tuple[np.ndarray, int] | None = None  # (action, receive time)
        self.unpaired: Counter[str] = Counter()  # states that completed no transition, by reason

    def feed(self, topic: str, timestamp_ns: int, data: bytes) -> Transition | None:
        """One recorded message; returns the transition it completes, if any. A message that
        does not decode counts as invalid (a bag may hold anything)."""
        role = self.topics.role(topic)
        if role == "episode" and self.obs_from_pose is None:
            self._state = None  # unstamped states: the episode message is the only boundary
        elif role == "action":
            msg = _decoded(data, FLOAT_ARRAY)
            action = None if msg is None else finite_vector(msg.data, self.task.act_dim)
            self._action = None if action is None else (action, timestamp_ns)
        elif role == "state":
            return self._on_state(self._state_record(data, timestamp_ns))
        return None

    def _state_record(self, data: bytes, received: int) -> _StateRecord | None:
        msg = _decoded(data, self.topics.state_type)
        if msg is None:
            return None
        if self.obs_from_pose is None:
            obs = finite_vector(msg.data, self.task.obs_dim)
            return None if obs is None else _StateRecord(obs, received, received)
        pose = pose_from_odometry(msg)
        if pose is None:
            return None
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        return _StateRecord(np.asarray(self.obs_from_pose(*pose), dtype=float), received, stamp)

    def _unpaired_reason(self, state: _StateRecord | None) -> str | None:
        previous, action = self._state, self._action
        if state is None:
            return "invalid"
        if previous is None:
            return "no_previous"
        if state.time <= previous.time:
            return "episode_start"  # the sim's reset state carries its terminal state's stamp
        if state.time - previous.time > self.max_gap_ns:
            return "state_gap"
        if action is None:
            return "no_action"
        if previous.received - action[1] > self.max_gap_ns:
            return "action_gap"  # the action was old before s: the sim had stopped holding it
        return None

    def _on_state(self, state: _StateRecord | None) -> Transition | None:
        reason = self._unpaired_reason(state)
        previous, self._state = self._state, state
        if reason is not None:
            self.unpaired[reason] += 1
            return None
        reward = float(self.task.reward(previous.obs, self._action[0], state.obs))
        return Transition(previous.obs, self._action[0], reward, state.obs, False)


@dataclass(frozen=True)
class _StateRecord:
    obs: np.ndarray  # (S,)
    received: int  # receive time, ns since the epoch
    time: int  # the sender's stamp (ns) when the message has one, else the receive time


# ---------------------------------------------------------------- writing


class BagRecorder:
    """Appends (topic, receive time, CDR bytes) to rotating MCAP bags from a writer thread."""

    def __init__(self, data_dir: Path, topic_types: Mapping[str, str], cfg: TrainerConfig, log: Log):
        self.data_dir, self.topic_types, self.cfg, self._log = data_dir, dict(topic_types), cfg, log
        self._queue: queue.Queue = queue.Queue(maxsize=cfg.queue_size)
        self.written = self.dropped = self.bags = 0
        self._writer: Writer | None = None
        self._connections: dict = {}
        self._opened_at = self._bag_bytes = self._unflushed = 0
        self._oldest_unflushed = 0.0
        self._thread = threading.Thread(target=self._run, name="bag-recorder", daemon=True)
        self._thread.start()

    def put(self, topic: str, timestamp_ns: int, data: bytes) -> bool:
        """Queue one message without waiting; False (and counted in ``dropped``) when the queue is full."""
        try:
            self._queue.put_nowait((topic, timestamp_ns, data))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def pending(self) -> int:
        """Messages queued and not yet handed to the bag writer."""
        return self._queue.unfinished_tasks

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, close the bag (footer, summary, metadata.yaml) and stop."""
        self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.cfg.flush_interval_s)
            except queue.Empty:
                item = ()  # nothing new: still flush a chunk that has grown old
            try:
                if item is None:
                    self._close_bag()
                    return
                if item:
                    self._write(*item)
                self._flush_if_due()
            except Exception as error:  # a full disk must not end recording silently
                self._log("error", f"replay: writing to {self.data_dir} failed: {error!r}")
            finally:
                if item != ():
                    self._queue.task_done()

    def _write(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        if self._writer is not None and self._rotation_due():
            self._close_bag()
        if self._writer is None:
            self._open_bag()
        self._writer.write(self._connections[topic], timestamp_ns, data)
        self.written += 1
        self._bag_bytes += len(data)
        self._oldest_unflushed = self._oldest_unflushed if self._unflushed else time.monotonic()
        self._unflushed += 1

    def _rotation_due(self) -> bool:
        return (self._bag_bytes >= self.cfg.max_bag_mb * 1e6
                or time.monotonic() - self._opened_at >= self.cfg.max_bag_seconds)

    def _flush_if_due(self) -> None:
        age = time.monotonic() - self._oldest_unflushed
        if self._unflushed and (self._unflushed >= self.cfg.flush_messages or age >= self.cfg.flush_interval_s):
            storage = self._writer.storage
            storage.close_chunk()
            storage.bio.flush()
            self._unflushed = 0

    def _bag_path(self) -> Path:
        # One clock read: with two, a second boundary between them named a bag before its predecessor.
        now_ns = time.time_ns()
        seconds = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_ns // 10**9))  # UTC: no DST step back
        return self.data_dir / f"{BAG_PREFIX}{seconds}_{now_ns % 10**9:09d}"

    def _open_bag(self) -> None:
        self._writer = Writer(self._bag_path(), version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections = {topic: self._writer.add_connection(topic, msgtype, typestore=typestore())
                             for topic, msgtype in self.topic_types.items()}
        self._opened_at, self._bag_bytes, self._unflushed = time.monotonic(), 0, 0
        self.bags += 1

    def _close_bag(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()


# ---------------------------------------------------------------- reading and recovery


def bag_directories(data_dir: Path, log: Log) -> list[Path]:
    """The bags in ``data_dir`` in recording order (names carry the start time), after
    finishing any recovery a crash interrupted."""
    for partial in sorted(data_dir.glob(BAG_PREFIX + "*" + PARTIAL_SUFFIX)):
        original = partial.with_name(partial.name[:-len(PARTIAL_SUFFIX)])
        if (original / "metadata.yaml").is_file():
            shutil.rmtree(partial)  # the recovered copy was complete
        else:
            shutil.rmtree(original, ignore_errors=True)
            partial.rename(original)
            log("warn", f"replay: redoing the interrupted recovery of {original.name}")
    return sorted(p for p in data_dir.glob(BAG_PREFIX + "*") if p.is_dir() and any(p.glob("*.mcap")))


def read_bag(bag: Path, log: Log) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, message type, receive time ns, CDR bytes) of one bag in time order. A bag
    that does not open (no ``metadata.yaml``: its writer was killed; or a damaged end) is
    recovered first; a bag with nothing readable yields nothing and logs a warning."""
    reader = _open_reader(bag)
    if reader is None:
        try:
            recovered = recover_bag(bag, log)
        except Exception as error:  # whatever is wrong with one file must not stop the trainer
            log("warn", f"replay: skipping {bag.name}: its recovery failed: {error!r}")
            return
        reader = _open_reader(bag) if recovered else None
        if reader is None:
            return
    try:
        for connection, timestamp, data in reader.messages():
            yield connection.topic, connection.msgtype, timestamp, bytes(data)
    except Exception as error:  # rosbags raises several error types for damaged files
        log("warn", f"replay: stopped reading the damaged bag {bag.name}: {error}")
    finally:
        reader.close()


def _open_reader(bag: Path) -> Reader | None:
    try:
        reader = Reader(bag)
        reader.open()
        return reader
    except Exception:  # no metadata.yaml, no footer, a bad index: recover instead
        return None


def recover_bag(bag: Path, log: Log) -> bool:
    """Rewrite the complete chunks of a half-written MCAP bag as a closed bag of the same
    name; False (bag left as it is) when nothing is readable."""
    mcap = next(bag.glob("*.mcap"))
    channels, messages = scan_unfinished_mcap(mcap.read_bytes())
    if not messages:
        log("warn", f"replay: skipping {bag.name}: it does not open and holds no complete chunk")
        return False
    partial = bag.with_name(bag.name + PARTIAL_SUFFIX)
    bag.rename(partial)
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {cid: writer.add_connection(topic, msgtype, typestore=typestore())
                       for cid, (topic, msgtype) in channels.items()}
        for cid, timestamp, data in messages:
            writer.write(connections[cid], timestamp, data)
    shutil.rmtree(partial)
    log("warn", f"replay: recovered {len(messages)} messages of the unfinished bag {bag.name}")
    return True


# ---------------------------------------------------------------- the buffer


class ReplayBuffer:
    """Loads the bags of ``cfg.data_dir`` into transitions and records new messages.

    ``load()`` first (before any ``record``); ``record`` is cheap and never waits for the
    disk; ``close()`` closes the bag. Transitions are returned as they are completed; this
    class keeps only counters (the learner holds the arrays).
    """

    def __init__(self, cfg: TrainerConfig, task: Task, topics: ReplayTopics, log: Log):
        self.cfg, self.topics, self._log = cfg, topics, log
        self.data_dir = Path(cfg.data_dir).expanduser()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.assembler = TransitionAssembler(task, topics, cfg.max_gap_s)
        self.transitions = 0
        self.loaded_messages = 0
        self.recorder: BagRecorder | None = None

    def load(self) -> Iterator[Transition]:
        """Every transition of every bag in ``data_dir``, oldest first."""
        types = self.topics.types()
        for bag in bag_directories(self.data_dir, self._log):
            for topic, msgtype, timestamp, data in read_bag(bag, self._log):
                if types.get(topic) != msgtype:
                    continue  # another topic, or another task's state type
                self.loaded_messages += 1
                transition = self.assembler.feed(topic, timestamp, data)
                if transition is not None:
                    self.transitions += 1
                    yield transition

    def record(self, topic: str, timestamp_ns: int, data: bytes) -> Transition | None:
        """Queue a received message for the bag; returns the transition it completes, if any."""
        if self.recorder is None:
            self.recorder = BagRecorder(self.data_dir, self.topics.types(), self.cfg, self._log)
        self.recorder.put(topic, timestamp_ns, data)
        transition = self.assembler.feed(topic, timestamp_ns, data)
        self.transitions += transition is not None
        return transition

    def stats(self) -> dict[str, int]:
        """Counters for the diagnostics: transitions, messages written / dropped, bags opened,
        and ``replay_unpaired_<reason>``: states that completed no transition, by reason."""
        recorder = self.recorder
        return {"replay_transitions": self.transitions, "replay_loaded_messages": self.loaded_messages,
                "replay_written": recorder.written if recorder else 0,
                "replay_dropped": recorder.dropped if recorder else 0, "replay_bags": recorder.bags if recorder else 0,
                **{f"replay_unpaired_{reason}": n for reason, n in sorted(self.assembler.unpaired.items())}}

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()

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
* done: True only when s' ended its episode by termination (a crash), not by the time
  limit, so the critic bootstraps through a time limit and not through a crash. When an
  episode ends, the sim publishes its terminal state and then the next episode's first
  state, both with the tick's stamp, and an ``episode`` record (JSON) naming the terminal
  state's stamp (``stamp_ns``) and whether it ``terminated``. A state stamped no later than
  the one before it starts a new run; the transition into the terminal state is held until
  its record arrives (the order in which one subscriber takes messages of two topics is
  not guaranteed, so either may come first). A record that never comes leaves it a time
  limit. Every transition is therefore released one state late. States without a stamp
  (Float64MultiArray) rely on the ``episode`` record alone to end a run.
* no transition spans a gap of more than ``max_gap_s`` between the stamps of s and s'
  (receive times without stamps), or an action received more than ``max_gap_s`` before s
  (the sim stops holding an action after ``sim.action_timeout_s``). Stamps, not receive
  times, measure the state gap, so a trainer that falls behind for a while (its messages
  arrive late and in a burst) keeps every transition. States that complete no transition
  are counted by reason (``replay_unpaired_*``).
* a message that does not decode, or whose numbers fail ``core.untrusted``'s checks (not
  finite, too large, wrong size, an action out of the task's bounds, an episode record that
  is no JSON object) is rejected: counted (``replay_rejected_<role>``) and never stored. A
  rejected state or episode record is as if it had never been received. A rejected action
  is recorded as an empty one (``no_command``): the sim brakes on either, so the action
  before it pairs with no later state, live and on reload alike.

Crash-loss bound. ``BagRecorder`` writes in its own thread from a bounded queue (full: the
message is dropped and counted; the subscriber never waits for the disk). Messages collect
in the bag's open MCAP chunk; the chunk is closed and flushed to the file once it holds
``flush_messages`` messages or its oldest message is ``flush_interval_s`` old. A process
killed at any moment (SIGKILL) therefore loses at most the open chunk, i.e. at most
min(``flush_messages``, the messages of the last ``flush_interval_s`` seconds) messages,
plus whatever was still queued (empty unless the disk stalls; never more than
``queue_size``). A lost state message costs at most one transition. Flushing hands the
bytes to the OS, so this holds for a process crash, not a power loss. The half-written bag
(no footer, no ``metadata.yaml``) is recovered on the next load: its complete records are
rewritten to a closed bag under the same name (``core.mcap_scan``: a damaged record costs
only itself and the rest of its chunk; the intact chunks after it are kept, and only a
truncation ends the file); so is a closed bag one of whose chunks does not read. A bag with
nothing readable is skipped with a warning. Bags rotate at ``max_bag_mb`` of payload or
``max_bag_seconds``.

Disk errors. A failed write (a full disk, an I/O error) is counted (``replay_write_errors``)
and logged at most once per ``WRITE_ERROR_LOG_PERIOD_S``; the bag is dropped as it is (its
closed chunks are recovered on the next load), the messages of its open chunk and the one
that failed are counted lost (``replay_lost``), and so are the messages of the next
``WRITE_RETRY_S``; then a new bag is tried. A ``data_dir`` that cannot be written at start
is a ``ConfigError`` (the node exits with code 2).

Relies on rosbags 0.11.9's MCAP writer closing a chunk with ``storage.close_chunk()``.
"""
from __future__ import annotations

import importlib
import math
import queue
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from loop_ros.core.config import ConfigError, TrainerConfig
from loop_ros.core.mcap_scan import scan_unfinished_mcap
from loop_ros.core.odometry import pose_from_odometry
from loop_ros.core.tasks import TASK_MODULES
from loop_ros.core.tasks.base import Task
from loop_ros.core.untrusted import checked_episode, checked_vector

ODOMETRY = "nav_msgs/msg/Odometry"
FLOAT_ARRAY = "std_msgs/msg/Float64MultiArray"
STRING = "std_msgs/msg/String"
ROLES = ("state", "action", "episode")
BAG_PREFIX = "replay_"
PARTIAL_SUFFIX = ".partial"  # a half-written bag while its recovered copy is being written
WRITE_RETRY_S = 1.0  # after a failed write the recorder drops messages (counted lost) this long, then opens a new bag
WRITE_ERROR_LOG_PERIOD_S = 1.0  # write failures are logged at most this often (with the counts so far)
Log = Callable[[str, str], None]  # (level, text)
MAX_EARLY_RECORDS = 16
"""Episode records kept while their terminal state has not come yet (it comes within a tick)."""

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


def no_command() -> bytes:
    """CDR of an empty Float64MultiArray on ``action``: no command. A rejected action is recorded
    as this (the sim brakes on both, so the action before it was not applied after it)."""
    ts = typestore()
    msg = ts.types[FLOAT_ARRAY](layout=ts.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
                                data=np.zeros(0, np.float64))
    return bytes(ts.serialize_cdr(msg, FLOAT_ARRAY))


@dataclass(frozen=True)
class Fed:
    """What one message did: ``valid`` False when it was rejected (it must not be stored), and
    the transitions it released."""

    valid: bool
    transitions: tuple[Transition, ...] = ()


class TransitionAssembler:
    """Turns the recorded message stream, in receive order, into transitions (module docstring).

    A transition is released one state late: only the state after s' (or the episode record)
    tells whether s' ended an episode, and how.
    """

    def __init__(self, task: Task, topics: ReplayTopics, max_gap_s: float):
        self.task, self.topics, self.obs_from_pose = task, topics, task_obs_from_pose(task)
        self.max_gap_ns = int(max_gap_s * 1e9)
        self._state: _StateRecord | None = None
        self._action: tuple[np.ndarray, int] | None = None  # (action, receive time)
        self._pending: Transition | None = None  # the newest transition, not yet released
        self._pending_end: int | None = None  # the stamp of its s'
        self._awaiting_record = False  # its s' ended an episode whose record has not come yet
        self._ended: dict[int, bool] = {}  # terminal stamp -> terminated, of records that came before their state
        self.unpaired: Counter[str] = Counter()  # states that completed no transition, by reason
        self.rejected: Counter[str] = Counter()  # messages refused (never stored), by role
        self.terminal_transitions = 0  # released with done (their s' ended an episode by termination)

    def feed(self, topic: str, timestamp_ns: int, data: bytes) -> Fed:
        """One received (or recorded) message. A message that does not decode or whose numbers
        fail ``core.untrusted``'s checks is rejected: counted, and as if never received."""
        role = self.topics.role(topic)
        if role == "episode":
            msg = _decoded(data, STRING)
            record = None if msg is None else checked_episode(msg.data)
            return self._rejected(role) if record is None else Fed(True, self._on_episode(record))
        if role == "action":
            msg = _decoded(data, FLOAT_ARRAY)
            if msg is not None and len(msg.data) == 0:  # no command (or a rejected one, recorded as that)
                self._action = None
                return Fed(True)
            action = None if msg is None else checked_vector(msg.data, self.task.act_dim)
            low, high = np.asarray(self.task.action_low), np.asarray(self.task.action_high)
            if action is None or np.any(action < low) or np.any(action > high):
                self._action = None  # the sim brakes on it: no transition pairs with the action before it
                return self._rejected(role)
            self._action = (action, timestamp_ns)
            return Fed(True)
        if role == "state":
            state = self._state_record(data, timestamp_ns)
            return self._rejected(role) if state is None else Fed(True, self._on_state(state))
        return self._rejected("unknown_topic")

    def _rejected(self, role: str) -> Fed:
        self.rejected[role] += 1
        return Fed(False)

    def _state_record(self, data: bytes, received: int) -> _StateRecord | None:
        msg = _decoded(data, self.topics.state_type)
        if msg is None:
            return None
        if self.obs_from_pose is None:
            obs = checked_vector(msg.data, self.task.obs_dim)
            return None if obs is None else _StateRecord(obs, received, received)
        pose = pose_from_odometry(msg)
        if pose is None:
            return None
        obs = checked_vector(self.obs_from_pose(*pose), self.task.obs_dim)
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        return None if obs is None else _StateRecord(obs, received, stamp)

    def _unpaired_reason(self, state: _StateRecord) -> str | None:
        previous, action = self._state, self._action
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

    def _on_state(self, state: _StateRecord) -> tuple[Transition, ...]:
        reason = self._unpaired_reason(state)
        previous, self._state = self._state, state
        if reason == "episode_start" and self._pending is not None and not self._awaiting_record:
            terminated = self._ended.pop(self._pending_end, None)
            if terminated is None:  # its record is still on its way: hold the transition for it
                self._awaiting_record = True
                self.unpaired[reason] += 1
                return ()
            return self._release(terminated) + self._count_unpaired(reason)
        released = self._release(False) if self._pending is not None else ()
        if reason is not None:
            return released + self._count_unpaired(reason)
        reward = float(self.task.reward(previous.obs, self._action[0], state.obs))
        self._pending = Transition(previous.obs, self._action[0], reward, state.obs, False)
        self._pending_end = state.time
        return released

    def _count_unpaired(self, reason: str) -> tuple:
        self.unpaired[reason] += 1
        return ()

    def _on_episode(self, record: dict) -> tuple[Transition, ...]:
        """An episode record: the sim says whether its episode ended by termination (a crash: done)
        or by the time limit (not done), and names the terminal state by its stamp."""
        terminated = record.get("terminated") is True
        stamp = record.get("stamp_ns")
        if self.obs_from_pose is None:  # unstamped states: the record itself is the boundary
            self._state = None
            return self._release(terminated) if self._pending is not None else ()
        if not isinstance(stamp, int):
            return ()  # a record without the stamp (an older sim's): the end stays a time limit
        if self._pending is not None and self._pending_end == stamp:
            return self._release(terminated)
        self._ended[stamp] = terminated  # came before its terminal state
        while len(self._ended) > MAX_EARLY_RECORDS:
            self._ended.pop(next(iter(self._ended)))
        return ()

    def _release(self, done: bool) -> tuple[Transition, ...]:
        """The pending transition, with ``done`` when its s' ended an episode by termination."""
        transition, self._pending, self._pending_end = self._pending, None, None
        self._awaiting_record = False
        if done:
            self.terminal_transitions += 1
            transition = Transition(transition.s, transition.a, transition.r, transition.s2, True)
        return (transition,)


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
        self.write_errors = self.lost = 0  # failed disk operations; messages they lost
        self._retry_at = self._error_logged_at = -math.inf
        self._errors_logged, self._last_error = 0, None
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
            written = self.written
            try:
                if item is None:
                    self._close_bag()
                elif item and time.monotonic() < self._retry_at:
                    self.lost += 1  # the disk failed less than WRITE_RETRY_S ago
                elif item:
                    self._write(*item)
                if item is not None:
                    self._flush_if_due()
            except Exception as error:  # a full disk must not end recording, nor flood the log
                self._write_failed(error, unwritten=int(bool(item)) - (self.written - written))
            finally:
                if item != ():
                    self._queue.task_done()
            if item is None:
                self._log_write_errors(force=True)
                return

    def _write_failed(self, error: Exception, unwritten: int) -> None:
        """Count the failure, drop the bag (its open chunk, and ``unwritten`` more messages, are
        lost; its closed chunks are recovered on the next load) and pause writing for WRITE_RETRY_S."""
        lost = self._unflushed + unwritten
        self._abandon_bag()
        self.written -= lost - unwritten
        self.lost += lost
        self.write_errors += 1
        self._retry_at = time.monotonic() + WRITE_RETRY_S
        self._last_error = error
        self._log_write_errors()

    def _log_write_errors(self, force: bool = False) -> None:
        """One log line per WRITE_ERROR_LOG_PERIOD_S at most, with the counts so far."""
        now = time.monotonic()
        if self.write_errors > self._errors_logged and (force or now - self._error_logged_at >= WRITE_ERROR_LOG_PERIOD_S):
            self._log("error", f"replay: writing to {self.data_dir} failed: {self._last_error!r} ({self.write_errors} "
                               f"write errors, {self.lost} messages lost so far)")
            self._error_logged_at, self._errors_logged = now, self.write_errors

    def _abandon_bag(self) -> None:
        """Drop the open bag without writing more to it (its file is closed; no footer)."""
        writer, self._writer, self._unflushed = self._writer, None, 0
        storage = getattr(writer, "storage", None)
        try:
            if storage is not None:
                storage.bio.close()  # closes the file even when flushing what is buffered fails
        except Exception:  # the disk is failing: the recovery on the next load reads what reached it
            pass

    def _write(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        if self._writer is not None and self._rotation_due():
            self._close_bag()
        if self._writer is None:
            self._open_bag()
        self._oldest_unflushed = self._oldest_unflushed if self._unflushed else time.monotonic()
        self._unflushed += 1  # from here on a failure loses it with the open chunk
        self.written += 1
        self._bag_bytes += len(data)
        self._writer.write(self._connections[topic], timestamp_ns, data)

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
        self._opened_at, self._bag_bytes, self._unflushed = time.monotonic(), 0, 0
        self._writer.open()
        self._connections = {topic: self._writer.add_connection(topic, msgtype, typestore=typestore())
                             for topic, msgtype in self.topic_types.items()}
        self.bags += 1

    def _close_bag(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer, self._unflushed = None, 0


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
    that does not open (no ``metadata.yaml``: its writer was killed; or a damaged end) or
    whose messages do not all read (a damaged chunk) is recovered first: every complete
    record is kept (``recover_bag``); a bag with nothing readable yields nothing and logs a
    warning. Nothing raised by a damaged file escapes."""
    messages = _read_messages(bag)
    if messages is None:
        try:
            recovered = recover_bag(bag, log)
            messages = _read_messages(bag) if recovered else None
        except Exception as error:  # whatever is wrong with one file must not stop the trainer
            log("warn", f"replay: skipping {bag.name}: its recovery failed: {error!r}")
            return
        if messages is None:
            if recovered:
                log("warn", f"replay: skipping {bag.name}: its recovered copy does not read")
            return
    yield from messages


def _read_messages(bag: Path) -> list[tuple[str, str, int, bytes]] | None:
    """Every message of a bag that rosbags opens and reads to the end (a bag is at most
    ``max_bag_mb``), else None: one damaged chunk must not cost the chunks after it."""
    reader = _open_reader(bag)
    if reader is None:
        return None
    try:
        return [(c.topic, c.msgtype, timestamp, bytes(data)) for c, timestamp, data in reader.messages()]
    except Exception:  # rosbags raises several error types for damaged files
        return None
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
    """Rewrite every complete message record of a half-written or damaged MCAP bag
    (``mcap_scan``: complete records before a damaged one, and the intact chunks after it)
    as a closed bag of the same name; False (bag left as it is) when nothing is readable.
    The damage skipped is named in the warning; a channel whose message type rosbags does
    not know (a damaged name) is dropped with its messages."""
    mcap = next(bag.glob("*.mcap"))
    channels, messages, damage = scan_unfinished_mcap(mcap.read_bytes())
    if not messages:
        log("warn", f"replay: skipping {bag.name}: it does not open and holds no complete chunk")
        return False
    partial = bag.with_name(bag.name + PARTIAL_SUFFIX)
    bag.rename(partial)
    kept = 0
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for cid, (topic, msgtype) in channels.items():
            try:
                connections[cid] = writer.add_connection(topic, msgtype, typestore=typestore())
            except Exception as error:  # rosbags refuses an unknown type or a duplicate topic
                damage.append(f"channel {topic!r} ({msgtype!r}) dropped: {error}")
        for cid, timestamp, data in messages:
            if cid in connections:
                writer.write(connections[cid], timestamp, data)
                kept += 1
    shutil.rmtree(partial)
    skipped = f"; damage skipped: {'; '.join(damage)}" if damage else ""
    log("warn", f"replay: recovered {kept} messages of the unfinished bag {bag.name}{skipped}")
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
        try:  # a real write, so a read-only or full data_dir stops the trainer at start, not at its first bag
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.data_dir, prefix=".write-probe-"):
                pass
        except OSError as error:
            raise ConfigError(f"trainer.data_dir {self.data_dir} is not writable: {error}") from error
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
                transitions = self.assembler.feed(topic, timestamp, data).transitions
                self.transitions += len(transitions)
                yield from transitions

    def record(self, topic: str, timestamp_ns: int, data: bytes) -> tuple[Transition, ...]:
        """Check a received message and queue it for the bag; returns the transitions it
        released. A rejected message (``TransitionAssembler.feed``) is counted, never stored; a
        rejected action is recorded as ``no_command()``, so a reload pairs the same transitions."""
        fed = self.assembler.feed(topic, timestamp_ns, data)
        if not fed.valid:
            if self.topics.role(topic) != "action":
                return ()
            data = no_command()
        if self.recorder is None:
            self.recorder = BagRecorder(self.data_dir, self.topics.types(), self.cfg, self._log)
        self.recorder.put(topic, timestamp_ns, data)
        self.transitions += len(fed.transitions)
        return fed.transitions

    def stats(self) -> dict[str, int]:
        """Counters for the diagnostics: transitions, messages written / dropped (queue full) /
        lost (``replay_write_errors`` failed disk writes lost them), bags opened, and
        ``replay_unpaired_<reason>``: states that completed no transition, by reason."""
        recorder = self.recorder
        return {"replay_transitions": self.transitions, "replay_loaded_messages": self.loaded_messages,
                "replay_written": recorder.written if recorder else 0,
                "replay_dropped": recorder.dropped if recorder else 0, "replay_bags": recorder.bags if recorder else 0,
                "replay_write_errors": recorder.write_errors if recorder else 0,
                "replay_lost": recorder.lost if recorder else 0,
                "replay_terminal_transitions": self.assembler.terminal_transitions,
                **{f"replay_rejected_{role}": n for role, n in sorted(self.assembler.rejected.items())},
                **{f"replay_unpaired_{reason}": n for reason, n in sorted(self.assembler.unpaired.items())}}

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()

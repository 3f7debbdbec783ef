"""Replay buffer on rosbag2 (DESIGN.md section 7): raw messages on disk, transitions in memory.

What is stored is what went over the wire: the CDR bytes of every ``state``, ``action`` and
``episode`` message with its receive time (ns since the epoch), appended to MCAP bags
(rosbag2 version 9, written with ``rosbags``; ``ros2 bag info`` and Foxglove open them) in
``data_dir``. Transitions are rebuilt from that stream by ``core.transitions``, live and on
load alike, so a restarted trainer sees the same data.

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

import math
import queue
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from loop_ros.core.config import ConfigError, TrainerConfig
from loop_ros.core.mcap_scan import scan_unfinished_mcap
from loop_ros.core.tasks import task_file_name
from loop_ros.core.tasks.base import Task
from loop_ros.core.transitions import ReplayTopics, Transition, TransitionAssembler, no_command, typestore

BAG_PREFIX = "replay_"
PARTIAL_SUFFIX = ".partial"  # a half-written bag while its recovered copy is being written
WRITE_RETRY_S = 1.0  # after a failed write the recorder drops messages (counted lost) this long, then opens a new bag
WRITE_ERROR_LOG_PERIOD_S = 1.0  # write failures are logged at most this often (with the counts so far)
Log = Callable[[str, str], None]  # (level, text)


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


def default_data_dir(task_name: str) -> Path:
    """``~/.ros/loop_ros/<task>/replay`` (the name made a file-name part: ``gym:Hopper-v5`` -> ``gym_Hopper-v5``)."""
    return Path("~/.ros/loop_ros") / task_file_name(task_name) / "replay"


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

    ``topics`` are the live streams: one ``ReplayTopics`` for one robot, or one per robot of a
    fleet (``trainer.robots``), all recorded into the same bags. Each stream has its own
    ``TransitionAssembler``, so one robot's states never pair with another's actions. On load,
    every stream found in the bags is used, also those of robots not live now (a fleet's bags
    teach a single robot's trainer, and the other way round).
    """

    def __init__(self, cfg: TrainerConfig, task: Task, topics: ReplayTopics | Sequence[ReplayTopics], log: Log):
        self.cfg, self.task, self._log = cfg, task, log
        self.streams = (topics,) if isinstance(topics, ReplayTopics) else tuple(topics)
        self._stream_of = {topic: stream for stream in self.streams for topic in stream.types()}
        self.topic_types = {topic: msgtype for stream in self.streams for topic, msgtype in stream.types().items()}
        self.data_dir = Path(cfg.data_dir or default_data_dir(task.name)).expanduser()
        try:  # a real write, so a read-only or full data_dir stops the trainer at start, not at its first bag
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.data_dir, prefix=".write-probe-"):
                pass
        except OSError as error:
            raise ConfigError(f"trainer.data_dir {self.data_dir} is not writable: {error}") from error
        self._assemblers: dict[ReplayTopics, TransitionAssembler] = {}
        self.transitions = 0
        self.loaded_messages = 0
        self.recorder: BagRecorder | None = None

    def load(self) -> Iterator[Transition]:
        """Every transition of every bag in ``data_dir``, oldest first."""
        recorded: dict[tuple[str, str], ReplayTopics | None] = {}  # (topic, type) -> its stream, found once
        for bag in bag_directories(self.data_dir, self._log):
            for topic, msgtype, timestamp, data in read_bag(bag, self._log):
                stream = self._stream_of.get(topic)
                if stream is None:
                    if (topic, msgtype) not in recorded:
                        recorded[topic, msgtype] = ReplayTopics.of_recorded(self.task, topic, msgtype)
                    stream = recorded[topic, msgtype]
                if stream is None or stream.types()[topic] != msgtype:
                    continue  # another topic, or another task's state type
                self.loaded_messages += 1
                transitions = self._assembler(stream).feed(topic, timestamp, data).transitions
                self.transitions += len(transitions)
                yield from transitions

    def record(self, topic: str, timestamp_ns: int, data: bytes) -> tuple[Transition, ...]:
        """Check a received message and queue it for the bag; returns the transitions it
        released. A rejected message (``TransitionAssembler.feed``) is counted, never stored; a
        rejected action is recorded as ``no_command()``, so a reload pairs the same transitions."""
        stream = self._stream_of[topic]
        fed = self._assembler(stream).feed(topic, timestamp_ns, data)
        if not fed.valid:
            if stream.role(topic) != "action":
                return ()
            data = no_command()
        if self.recorder is None:
            self.recorder = BagRecorder(self.data_dir, self.topic_types, self.cfg, self._log)
        self.recorder.put(topic, timestamp_ns, data)
        self.transitions += len(fed.transitions)
        return fed.transitions

    def stats(self) -> dict[str, int]:
        """Counters for the diagnostics: transitions, messages written / dropped (queue full) /
        lost (``replay_write_errors`` failed disk writes lost them), bags opened, and
        ``replay_unpaired_<reason>``: states that completed no transition, by reason."""
        recorder, assemblers = self.recorder, self._assemblers.values()
        rejected = sum((assembler.rejected for assembler in assemblers), Counter())
        unpaired = sum((assembler.unpaired for assembler in assemblers), Counter())
        return {"replay_transitions": self.transitions, "replay_loaded_messages": self.loaded_messages,
                "replay_written": recorder.written if recorder else 0,
                "replay_dropped": recorder.dropped if recorder else 0, "replay_bags": recorder.bags if recorder else 0,
                "replay_write_errors": recorder.write_errors if recorder else 0,
                "replay_lost": recorder.lost if recorder else 0,
                "replay_terminal_transitions": sum(assembler.terminal_transitions for assembler in assemblers),
                **{f"replay_rejected_{role}": n for role, n in sorted(rejected.items())},
                **{f"replay_unpaired_{reason}": n for reason, n in sorted(unpaired.items())}}

    def _assembler(self, stream: ReplayTopics) -> TransitionAssembler:
        if stream not in self._assemblers:
            self._assemblers[stream] = TransitionAssembler(self.task, stream, self.cfg.max_gap_s)
        return self._assemblers[stream]

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()

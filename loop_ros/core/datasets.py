"""Offline datasets: rosbag2 bags of a task's ``state`` / ``action`` / ``episode`` topics -> transitions.

A dataset is a directory the user names: one bag (a directory with ``metadata.yaml``, as ``ros2 bag
record`` writes it, MCAP or sqlite3), or a directory of bags (the trainer's ``data_dir``, a
``loop-ros dataset`` recording), read in name order. Its messages, in receive order, go through the
trainer's ``TransitionAssembler``, so offline learning sees exactly the transitions the trainer
node would have formed live (the same episode-boundary and gap rules). Each dataset gets an
assembler of its own: no transition joins two datasets.

A dataset is refused as a whole (``DatasetError``, a ``ConfigError``: commands exit 2) when it
has no bag, a bag does not open, a needed topic is missing or has another message type, any
message fails the checks (wrong size for the task, not finite: the replay would drop it
silently, a dataset should not be half used without anyone noticing), or no transition forms.
Bags are only read, never repaired: a bag whose writer was killed opens after the trainer has
loaded (and so recovered) it once.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader

from loop_ros.core.config import ConfigError
from loop_ros.core.tasks.base import Task
from loop_ros.core.transitions import ReplayTopics, TransitionAssembler, states_carry_transitions


MIN_TRANSITIONS = 2
"""Fewest transitions a dataset must give: the model's fit holds at least one out."""


class DatasetError(ConfigError):
    """A dataset that cannot be used as given (one line, naming it)."""


@dataclass
class Dataset:
    """Transitions of one or more datasets as float32 arrays (``s, a, r, s2, d``), and where they
    came from (``sources``: one dict per dataset for the bundle's provenance)."""

    arrays: dict[str, np.ndarray]
    sources: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.arrays["r"])


def bag_directories(path: Path) -> list[Path]:
    """The bags of a dataset path: itself when it is a bag, else every bag below it, in name order."""
    if (path / "metadata.yaml").is_file():
        return [path]
    return sorted(p.parent for p in path.rglob("metadata.yaml"))


def bags_sha256(bags: list[Path]) -> str:
    """One sha256 over every file of the bags (relative names and contents, in name order)."""
    digest = hashlib.sha256()
    for bag in bags:
        for file in sorted(p for p in bag.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(bag.parent)).encode())
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def needed_topics(task: Task, topics: ReplayTopics) -> dict[str, str]:
    """topic -> message type that a dataset must hold: the state, and the action unless the task's
    states carry it (``core.array_state``). Episode records are optional (without them, episode
    ends are time limits, not terminations)."""
    types = topics.types()
    needed = {topics.state: types[topics.state]}
    if not states_carry_transitions(task):
        needed[topics.action] = types[topics.action]
    return needed


def _messages(bag: Path, wanted: dict[str, str], name: str):
    """(topic, receive time ns, CDR bytes) of the wanted topics of one bag, in time order."""
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as error:  # rosbags raises several error types for a bag it cannot open
        raise DatasetError(f"dataset {name}: bag {bag} does not open: {error}") from error
    try:
        present = {c.topic: c.msgtype for c in reader.connections}
        for topic, msgtype in wanted.items():
            if topic in present and present[topic] != msgtype:
                raise DatasetError(f"dataset {name}: topic {topic} in {bag.name} is {present[topic]}, "
                                   f"the task needs {msgtype}")
        connections = [c for c in reader.connections if c.topic in wanted]
        if not connections:  # rosbags reads every topic when given none
            return
        try:
            for connection, timestamp, data in reader.messages(connections=connections):
                yield connection.topic, timestamp, bytes(data)
        except Exception as error:  # a damaged chunk or database: rosbags raises several error types
            raise DatasetError(f"dataset {name}: bag {bag} does not read to its end: {error}") from error
    finally:
        reader.close()


def load_dataset(task: Task, path: Path, topics: ReplayTopics, max_gap_s: float) -> Dataset:
    """The transitions of one dataset path (module docstring for what is refused)."""
    name = str(path)
    if not path.is_dir():
        raise DatasetError(f"dataset {name}: no such directory")
    bags = bag_directories(path)
    unfinished = sorted({f.parent for ext in ("*.mcap", "*.db3") for f in path.rglob(ext)} - set(bags))
    if unfinished:
        raise DatasetError(f"dataset {name}: {unfinished[0]} has no metadata.yaml (its writer was killed: "
                           f"`ros2 bag reindex` it, or let the trainer load it once, which recovers it)")
    if not bags:
        raise DatasetError(f"dataset {name}: no rosbag2 bag (a directory with metadata.yaml) in it")
    wanted = topics.types()
    needed = needed_topics(task, topics)
    assembler = TransitionAssembler(task, topics, max_gap_s)
    seen: dict[str, int] = dict.fromkeys(wanted, 0)
    rows = []
    for bag in bags:
        for topic, timestamp, data in _messages(bag, wanted, name):
            seen[topic] += 1
            rows.extend(assembler.feed(topic, timestamp, data).transitions)
    rows.extend(assembler.finish())
    missing = [topic for topic in needed if not seen[topic]]
    if missing:
        raise DatasetError(f"dataset {name}: no messages on {', '.join(missing)} "
                           f"(topics read: {', '.join(t for t, n in seen.items() if n) or 'none'})")
    rejected = {role: n for role, n in assembler.rejected.items() if n}
    if rejected:
        raise DatasetError(f"dataset {name}: messages fail the checks for task {task.name} ({task.obs_dim} observation "
                           f"values, {task.act_dim} action values within the bounds, all finite): {rejected}")
    if len(rows) < MIN_TRANSITIONS:
        raise DatasetError(f"dataset {name}: {len(rows)} transitions form from its {seen[topics.state]} states, "
                           f"at least {MIN_TRANSITIONS} are needed (unpaired: {dict(assembler.unpaired)})")
    arrays = {"s": np.stack([t.s for t in rows]), "a": np.stack([t.a for t in rows]),
              "r": np.array([t.r for t in rows]), "s2": np.stack([t.s2 for t in rows]),
              "d": np.array([t.done for t in rows])}
    source = {"path": str(path.resolve()), "bags": len(bags), "sha256": bags_sha256(bags),
              "messages": seen, "transitions": len(rows), "terminal_transitions": assembler.terminal_transitions,
              "unpaired": dict(assembler.unpaired)}
    return Dataset({k: v.astype(np.float32) for k, v in arrays.items()}, [source])


def load_datasets(task: Task, paths: list[Path], topics: ReplayTopics, max_gap_s: float) -> Dataset:
    """Every transition of ``paths`` (each a dataset, ``load_dataset``), concatenated in order."""
    parts = [load_dataset(task, Path(p), topics, max_gap_s) for p in paths]
    arrays = {key: np.concatenate([part.arrays[key] for part in parts]) for key in parts[0].arrays}
    return Dataset(arrays, [source for part in parts for source in part.sources])

"""A headless training run (``loop-ros train``) on disk, so ``--resume`` goes on where it stopped.

At every evaluation the run writes ``DIR/resume.pt`` (whole or not at all, ``save_whole``): the
learner (``learner_state``: networks, optimisers, generators, counters), its replay (the
``TransitionBuffer``'s transitions and write position) and the run's own counters and acting
generator, as JSON. ``--resume`` restores them into a new learner and goes on from that step;
the evaluations logged after it (a run killed between its log and its save) are dropped.

What a resumed run does not repeat: the training episode that was under way at the save ends
there (the run resets the env, seeded with the run's seed plus the step), so from that step on
a resumed run is not the uninterrupted one; it is as reproducible (a resume from the same file
goes the same way). A file of another run (task, algo, seed or settings), or one that cannot be
read, is refused with the reason and changes nothing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loop_ros.core.learner_state import LearnerStateError, learner_state, restore_learner, save_whole

RESUME_FILE = "resume.pt"
FORMAT = 1


def save_run(path: Path, trainer, run: dict[str, Any]) -> None:
    """Write the learner of ``trainer`` (a ``LoopTrainer``), its replay and ``run`` (JSON-able) to ``path``."""
    buffer = trainer.buffer
    save_whole({"format": FORMAT, "learner": learner_state(trainer), "position": buffer.position,
                "replay": {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in buffer.arrays().items()},
                "run": json.dumps(run)}, path)


def resume_run(path: Path, trainer, identity: dict[str, Any]) -> dict[str, Any]:
    """Restore the run saved in ``path`` into ``trainer`` (new, with an empty replay); returns its
    ``run`` dict. ``LearnerStateError`` (nothing changed) when the file cannot be read or its run's
    ``identity`` is not this one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != FORMAT:
            raise ValueError(f"it is not a run of format {FORMAT}")
        run = json.loads(state["run"])
        replay = {key: value.numpy() for key, value in state["replay"].items()}
        position = int(state["position"])
    except Exception as error:  # noqa: BLE001 - a damaged file is refused whatever raises
        raise LearnerStateError(f"{path} cannot be read: {error!r}") from error
    identity = json.loads(json.dumps(identity))  # as saved: tuples are lists
    differ = sorted(key for key in identity if run.get("identity", {}).get(key) != identity[key])
    if differ:
        raise LearnerStateError(f"{path} is of another run: its {', '.join(differ)} differ")
    buffer = trainer.buffer
    size = _replay_size(replay, position, buffer)
    if size is None:
        raise LearnerStateError(f"{path}: its replay does not fit this learner's "
                                f"({ {key: value.shape for key, value in replay.items()} }, position {position})")
    restored = restore_learner(trainer, state["learner"])
    for key, value in replay.items():
        buffer.data[key][:size] = value
    buffer.size, buffer.position = size, position
    trainer.steps = restored["steps"]
    return run


def _replay_size(replay: dict[str, np.ndarray], position: int, buffer) -> int | None:
    """The number of saved transitions when they fit ``buffer`` (same arrays, one length, a valid position)."""
    if set(replay) != set(buffer.data):
        return None
    sizes = {len(value) for value in replay.values()}
    size = sizes.pop() if len(sizes) == 1 else -1
    fits = all(value.shape[1:] == buffer.data[key].shape[1:] and value.dtype == buffer.data[key].dtype
               for key, value in replay.items())
    return size if fits and 0 <= size <= buffer.capacity and 0 <= position < buffer.capacity else None

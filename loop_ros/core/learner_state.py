"""A LOOP learner's state on disk, so a restarted trainer goes on learning where it stopped.

The trainer node's replay (the bags in ``trainer.data_dir``) keeps every transition, but not
what was learned from them. A trainer restarted without this state refits its ensemble on the
whole replay at once, but starts SAC from random networks and owes it the updates of the whole
replay, capped at ``trainer.max_owed_updates``: the models it publishes then pair a dynamics
model fitted on all the data with a value function far behind it (measured: a second `make
run` after 77k transitions had accumulated published one after 5000 SAC updates, and the car
left the keep-in circle for 404 ticks).

So the node saves the learner after every publication and when it stops (``save_learner_state``):
the networks, optimiser states, random generators and counters of SAC and of the ensemble, in
one file in ``data_dir``; and restores it at start, before the replay is loaded
(``read_learner_state``, ``restore_learner``). The replay itself is not in the file: it is
rebuilt from the bags, and the SAC updates owed to transitions recorded after the save are made
up as usual.

The file is written whole or not at all: a synced temporary sibling renamed over it. It is read
with ``torch.load(weights_only=True)``, which unpickles tensors, numbers and strings, never code.
A file that cannot be read, holds anything malformed, or belongs to another task, network shape or
an algo that learns other networks (loop and safe-loop learn the same ones) is refused with the
reason (``LearnerStateError``) and changes nothing: the learner starts from scratch, and the file
is renamed to ``learner.pt.refused`` (``set_aside``), so a later save does not overwrite it.
Optimiser settings (learning rates, weight decay) come from the current configuration, not from
the file, so an edited ``sac.lr`` applies. The SAC updates the trainer skipped are saved too, so
a restored trainer does not owe them again.
"""
from __future__ import annotations

import copy
import glob
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from loop_ros.core.bundle import fsync_directory

STATE_FILE = "learner.pt"
"""The learner state's file name inside ``trainer.data_dir``."""
FORMAT = 1
SAC_STATEFUL = ("actor", "critic", "critic_target", "actor_optimizer", "critic_optimizer", "alpha_optimizer")
"""The attributes of ``Sac`` with a ``state_dict`` (besides its temperature and noise generator)."""


class LearnerStateError(ValueError):
    """A learner state that cannot be used; the message says why."""


def learner_state(trainer, sac_updates_skipped: int = 0) -> dict[str, Any]:
    """Everything of a ``LoopTrainer`` that learning changes, except its replay buffer; tensors on the CPU.
    ``sac_updates_skipped``: the SAC updates its driver dropped (``training_worker``), so they are not
    owed again after a restore."""
    sac, ensemble = trainer.sac, trainer.ensemble
    return {
        "format": FORMAT, "task": trainer.task.name, "algo": trainer.algo,
        "obs_dim": trainer.task.obs_dim, "act_dim": trainer.task.act_dim,
        "steps": trainer.steps, "fits": trainer.fits, "fitted_at": trainer.fitted_at,
        "sac_updates": trainer.sac_updates, "sac_updates_skipped": sac_updates_skipped,
        "rng": trainer.rng.bit_generator.state,
        "sac": {**{name: _cpu(getattr(sac, name).state_dict()) for name in SAC_STATEFUL},
                "log_alpha": sac.log_alpha.detach().cpu().clone(), "generator": sac.generator.get_state()},
        "ensemble": {"net": _cpu(ensemble.net.state_dict()), "optimizer": _cpu(ensemble.optimizer.state_dict()),
                     "elites": list(ensemble.elites),
                     "stats": None if ensemble.stats is None else
                     {key: torch.from_numpy(np.array(value)) for key, value in ensemble.stats.items()}},
    }


def restore_learner(trainer, state: dict[str, Any]) -> dict[str, int]:
    """Load ``state`` (``learner_state``) into ``trainer``, whose replay is still empty; returns the
    state's ``steps`` (the transitions it had learned from) and ``sac_updates_skipped``.

    Raises ``LearnerStateError`` when the state does not fit the trainer, whatever is wrong with it
    (the file is not trusted to be well-formed), and then leaves the trainer as it was: everything
    is loaded into copies, which replace the trainer's only once all of them loaded."""
    try:
        _check_identity(trainer, state)
        sac, ensemble = copy.deepcopy(trainer.sac), copy.deepcopy(trainer.ensemble)
        _load_sac(sac, state["sac"])
        _load_ensemble(ensemble, state["ensemble"])
        rng = np.random.Generator(type(trainer.rng.bit_generator)())
        rng.bit_generator.state = state["rng"]
        counts = {key: _count(state[key]) for key in ("steps", "fits", "sac_updates", "sac_updates_skipped")}
        fitted_at = None if state["fitted_at"] is None else _count(state["fitted_at"])
        if counts["fits"] and ensemble.stats is None:
            raise ValueError(f"{counts['fits']} fits but no normalisation statistics")
        dynamics = ensemble.planning_module() if counts["fits"] else None
    except LearnerStateError:
        raise
    except Exception as error:  # noqa: BLE001 - any malformed content is a refusal, never a crash
        raise LearnerStateError(f"it does not fit this learner: {error!r}") from error
    trainer.sac, trainer.ensemble, trainer.rng, trainer.dynamics_module = sac, ensemble, rng, dynamics
    trainer.fits, trainer.fitted_at, trainer.sac_updates = counts["fits"], fitted_at, counts["sac_updates"]
    trainer.behaviour = trainer.planner()  # over the restored networks
    return {"steps": counts["steps"], "sac_updates_skipped": counts["sac_updates_skipped"]}


def save_learner_state(trainer, path: Path, sac_updates_skipped: int = 0) -> None:
    """Write ``learner_state(trainer, sac_updates_skipped)`` to ``path``, replacing it whole (module docstring)."""
    save_whole(learner_state(trainer, sac_updates_skipped), path)


def save_whole(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` ``state`` to ``path`` through a synced temporary sibling renamed over it: a reader
    finds the old file or the new one, never a part."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):  # of a writer killed mid-save
        leftover.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(path.parent)


def read_learner_state(path: Path) -> dict[str, Any] | None:
    """The state saved in ``path``; None when there is no such file. ``LearnerStateError`` when it cannot be read."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a damaged file is refused whatever torch raises
        raise LearnerStateError(f"it cannot be read: {error!r}") from error
    if not isinstance(state, dict) or type(state.get("format")) is not int or state["format"] != FORMAT:
        raise LearnerStateError(f"it is not a learner state of format {FORMAT}")
    return state


def set_aside(path: Path) -> Path:
    """Rename a refused state to ``<name>.refused`` (replacing an older one), so the next save does
    not overwrite what may still be wanted (e.g. after a temporary change of network sizes)."""
    refused = path.with_name(path.name + ".refused")
    os.replace(path, refused)
    return refused


def _identity(task_name: str, algo: str, obs_dim: int, act_dim: int) -> tuple:
    """What a state must match: the task and its sizes, and which networks the algo learns (loop and
    safe-loop learn the same ones, so a state moves between them)."""
    return task_name, algo != "sac", algo != "pets", obs_dim, act_dim


def _check_identity(trainer, state: dict[str, Any]) -> None:
    saved = tuple(state.get(key) for key in ("task", "algo", "obs_dim", "act_dim"))
    if not all(type(value) is want for value, want in zip(saved, (str, str, int, int))):
        raise LearnerStateError("its task, algo and sizes are not a name, a name and two integers")
    ours = (trainer.task.name, trainer.algo, trainer.task.obs_dim, trainer.task.act_dim)
    if _identity(*saved) != _identity(*ours):
        raise LearnerStateError(f"it is for task, algo, state and action sizes {saved}, this learner's are {ours}")


def _count(value) -> int:
    """A counter of the file: a non-negative int, nothing else."""
    if type(value) is not int or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


def _cpu(tree):
    """A state dict with every tensor on the CPU. (The SAC noise generator's state stays the device's:
    the node's learner runs on the CPU, and a state from a CUDA learner is refused by a CPU one.)"""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {key: _cpu(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_cpu(value) for value in tree]
    return tree


def _load_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """The saved moments and step counts; the learning rates and decays configured now."""
    settings = [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, settings):
        group.update(kept)


def _load_sac(sac, state: dict[str, Any]) -> None:
    for name in SAC_STATEFUL:
        target = getattr(sac, name)
        if isinstance(target, torch.optim.Optimizer):
            _load_optimizer(target, state[name])
        else:
            target.load_state_dict(state[name])
    with torch.no_grad():
        sac.log_alpha.copy_(state["log_alpha"])
    sac.generator.set_state(state["generator"])


def _load_ensemble(ensemble, state: dict[str, Any]) -> None:
    ensemble.net.load_state_dict(state["net"])
    _load_optimizer(ensemble.optimizer, state["optimizer"])
    elites = [_count(k) for k in state["elites"]]
    if len(elites) != ensemble.cfg.num_elites or not all(0 <= k < ensemble.net.members for k in elites):
        raise ValueError(f"elites {elites} do not fit {ensemble.cfg.num_elites} of {ensemble.net.members} members")
    ensemble.elites = elites
    stats = state["stats"]
    if stats is not None:
        S, A = ensemble.obs_dim, ensemble.act_dim
        shapes = {"input_mean": S + A, "input_std": S + A, "delta_mean": S, "delta_std": S, "reward_mean": 1,
                  "reward_std": 1}
        stats = {key: np.asarray(stats[key], np.float32) for key in shapes}
        if any(stats[key].shape != (size,) or not np.isfinite(stats[key]).all() for key, size in shapes.items()):
            raise ValueError("the ensemble's normalisation statistics have the wrong sizes or are not finite")
        if any((stats[key] <= 0).any() for key in shapes if key.endswith("_std")):
            raise ValueError("the ensemble's normalisation statistics have a standard deviation <= 0")
    ensemble.stats = stats

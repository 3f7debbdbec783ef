"""Value learners: what learns the actor and the critic a bundle carries (``actor.onnx``, ``critic.onnx``).

One small interface, ``ValueLearner``: ``update(batch)`` takes one minibatch of transitions
(``s, a, r, s2, d``) and returns its metrics; ``actor_module()`` and ``critic_module()`` are what
a bundle exports (the tanh-Gaussian actor and the twin-Q critic of ``core.sac``, so every learner's
bundle plans alike). SAC (``core.sac``) learns online, from the replay the planner fills; an offline
learner (``OFFLINE_LEARNERS``) learns from a fixed dataset (``loop-ros offline``, Alg. 2 of the
paper):

* ``crr``: CRR (``core.crr``), the paper's base algorithm: weighted regression to the dataset's actions;
* ``rosmo``: ROSMO (``core.rosmo``), continuous-action one-step lookahead through the fitted dynamics
  model, regression towards the advantage-filtered improved samples plus behaviour cloning.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from loop_ros.core.tasks.base import Task


class ValueLearner(Protocol):
    def update(self, batch: dict[str, np.ndarray]) -> dict[str, float]: ...

    def actor_module(self) -> torch.nn.Module: ...

    def critic_module(self) -> torch.nn.Module: ...


OFFLINE_LEARNERS = ("crr", "rosmo")
"""Offline value learners; each takes its settings from the params section of its name."""


def make_offline_learner(name: str, task: Task, configs: dict, seed: int, device: str = "cpu",
                         dynamics: torch.nn.Module | None = None) -> ValueLearner:
    """The offline learner ``name`` (one of ``OFFLINE_LEARNERS``) for ``task``, set by ``configs[name]``;
    ``dynamics`` is the fitted ensemble's planning module (``DynamicsEnsemble.planning_module``), for
    the learners that look ahead through the model."""
    if name == "crr":
        from loop_ros.core.crr import Crr

        return Crr(task.obs_dim, task.act_dim, task.action_low, task.action_high, configs["crr"], seed=seed,
                   device=device)
    if name == "rosmo":
        from loop_ros.core.rosmo import Rosmo

        if dynamics is None:
            raise ValueError("the rosmo learner looks ahead through the dynamics model: pass the fitted "
                             "ensemble's planning module as dynamics")
        return Rosmo(task.obs_dim, task.act_dim, task.action_low, task.action_high, configs["rosmo"], dynamics,
                     seed=seed, device=device)
    raise ValueError(f"unknown offline learner {name!r}, known: {OFFLINE_LEARNERS}")

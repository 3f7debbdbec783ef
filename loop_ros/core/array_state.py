"""The ``ARRAY`` state message (std_msgs/Float64MultiArray) of a task: the observation, then the
task's ``state_extras``. Both directions live here, so the sim node, the planner and the replay agree.

A task with a closed-form reward sends the observation alone (any robot driver can publish it).
A task whose reward is learned (``reward_from_model``: the gymnasium tasks) needs each step's
reward from the sim to learn it, and its episodes' boundaries: the sim appends the reward of the
step into this state (0 after a reset) and the step count since the reset (0 marks a reset
state, the trainer's episode boundary: array messages carry no stamp). Parsing is part of the
trust boundary (``core.untrusted``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loop_ros.core.untrusted import checked_vector


@dataclass(frozen=True)
class ArrayState:
    obs: np.ndarray  # (obs_dim,)
    reward: float | None = None  # of the step into this state, when the task sends it
    step: int | None = None  # steps since the episode's reset, when the task sends it


def array_state_values(task, obs: np.ndarray, reward: float = 0.0, step: int = 0) -> np.ndarray:
    """What the sim sends for ``obs`` (the values of ``task.state_extras`` appended)."""
    extras = {"reward": float(reward), "step": float(step)}
    return np.concatenate([np.asarray(obs, dtype=float), [extras[name] for name in task.state_extras]])


def parse_array_state(values, task) -> ArrayState | None:
    """A received message's values, checked (``core.untrusted``): None when the size is not
    ``obs_dim + len(state_extras)``, a value is not finite or too large, or the step is no count."""
    extras = task.state_extras
    array = checked_vector(values, task.obs_dim + len(extras))
    if array is None:
        return None
    named = dict(zip(extras, array[task.obs_dim:]))
    step = named.get("step")
    if step is not None and (step < 0 or step != int(step)):
        return None
    return ArrayState(array[:task.obs_dim], named.get("reward"), None if step is None else int(step))

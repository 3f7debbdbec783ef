"""The ``ARRAY`` state message (std_msgs/Float64MultiArray) of a task: the observation, then the
task's ``state_extras``. Both directions live here, so the sim node, the planner and the replay agree.

A task with a closed-form reward sends the observation alone (any robot driver can publish it).
A task whose reward is learned (``reward_from_model``: the gymnasium tasks) needs each step's
reward from the sim to learn it, and its episodes' boundaries: the sim appends the action it
applied in the step into this state, that step's reward (after a reset: the safe action and 0),
the step count since the reset (0 marks a reset state: array messages carry no stamp) and
whether this state ended its episode by termination (1) or not (0). Each state is then a whole
transition's end for the trainer, whatever the order in which the ``action`` and ``episode``
messages of other publishers arrive (in lock-step a step takes a millisecond). Parsing is part of the trust boundary (``core.untrusted``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loop_ros.core.untrusted import checked_vector


@dataclass(frozen=True)
class ArrayState:
    obs: np.ndarray  # (obs_dim,)
    action: np.ndarray | None = None  # (act_dim,) the action applied in the step into this state
    reward: float | None = None  # of the step into this state
    step: int | None = None  # steps since the episode's reset
    terminated: bool | None = None  # this state ended its episode by termination
    # each None when the task does not send it


def extra_sizes(task) -> dict[str, int]:
    """Each of ``task.state_extras`` and how many values it takes, in message order."""
    return {name: task.act_dim if name == "action" else 1 for name in task.state_extras}


def array_state_values(task, obs: np.ndarray, action=None, reward: float = 0.0, step: int = 0,
                       terminated: bool = False) -> np.ndarray:
    """What the sim sends for ``obs`` (the values of ``task.state_extras`` appended); ``action``
    None (a reset state: no step led to it) is sent as the safe action."""
    action = task.safe_action() if action is None else action
    extras = {"action": np.asarray(action, dtype=float).reshape(task.act_dim), "reward": [float(reward)],
              "step": [float(step)], "terminated": [float(terminated)]}
    return np.concatenate([np.asarray(obs, dtype=float).reshape(task.obs_dim),
                           *(extras[name] for name in task.state_extras)])


def parse_array_state(values, task) -> ArrayState | None:
    """A received message's values, checked (``core.untrusted``): None when the size is not the
    observation's and the extras', a value is not finite or too large, the step is no count, the
    termination no 0/1, or the action outside the task's bounds."""
    sizes = extra_sizes(task)
    array = checked_vector(values, task.obs_dim + sum(sizes.values()))
    if array is None:
        return None
    named, start = {}, task.obs_dim
    for name, size in sizes.items():
        named[name] = array[start:start + size]
        start += size
    action = named.get("action")
    if action is not None and (np.any(action < task.action_low) or np.any(action > task.action_high)):
        return None
    step, terminated, reward = (float(named[k][0]) if k in named else None for k in ("step", "terminated", "reward"))
    if step is not None and (step < 0 or step != int(step)) or terminated not in (None, 0.0, 1.0):
        return None
    return ArrayState(array[:task.obs_dim], action, reward, None if step is None else int(step),
                      None if terminated is None else bool(terminated))

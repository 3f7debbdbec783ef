"""A task with no closed-form reward: the planner uses the model's predicted reward.

Used for the gymnasium-style benchmark presets (e.g. paper-halfcheetah dims).
"""
from __future__ import annotations

import numpy as np

from loop_ros.core.tasks.base import Task


class GenericTask(Task):
    name = "generic"
    reward_from_model = True

    def __init__(self, obs_dim: int, act_dim: int):
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.action_low = -np.ones(act_dim, dtype=np.float32)
        self.action_high = np.ones(act_dim, dtype=np.float32)

    def position(self, state):
        return state[..., :2]


TASK_CLASS = GenericTask

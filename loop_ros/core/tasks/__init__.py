"""Task registry: name -> module defining ``TASK_CLASS`` (and ``obs_from_pose`` for a task whose
state is a planar pose, sent as nav_msgs/Odometry)."""
from __future__ import annotations

import importlib
from typing import Callable

from loop_ros.core.tasks.base import Task

TASK_MODULES = {
    "point_mass": "loop_ros.core.tasks.point_mass",
    "rc_car": "loop_ros.core.tasks.rc_car",
    "generic": "loop_ros.core.tasks.generic",
}


def make_task(name: str, **kwargs) -> Task:
    if name not in TASK_MODULES:
        raise ValueError(f"unknown task '{name}', known: {sorted(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[name]).TASK_CLASS(**kwargs)


def obs_from_pose_of(name: str) -> Callable | None:
    """The task's ``obs_from_pose(x, y, yaw, vx_world, vy_world, yaw_rate)``, None when its state is no pose."""
    return getattr(importlib.import_module(TASK_MODULES[name]), "obs_from_pose", None)

"""Task registry: name -> module defining ``TASK_CLASS``."""
from __future__ import annotations

import importlib

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

"""Task registry: a task name -> its ``Task`` (``base.py``).

A name is one of:
  * a task shipped here (``BUILTIN_TASKS``): ``rc_car``, ``rc_car_fast``, ``rc_car_drift``, ``point_mass``;
  * ``gym:<EnvId>``: a gymnasium MuJoCo env (``gym_mujoco.py``), e.g. ``gym:Hopper-v5``;
  * a ``loop_ros.tasks`` entry point of an installed package (README, "Your own task");
  * ``package.module:attribute``, importable from the Python path.
The object found is a ``Task`` subclass, an instance, or a callable returning one.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

import numpy as np

from loop_ros.core.config import ConfigError
from loop_ros.core.tasks.base import ARRAY, ODOMETRY, Task

BUILTIN_TASKS = {
    "rc_car": "loop_ros.core.tasks.rc_car:RcCarTask",
    "rc_car_fast": "loop_ros.core.tasks.rc_car:RcCarFastTask",
    "rc_car_drift": "loop_ros.core.tasks.rc_car:RcCarDriftTask",
    "point_mass": "loop_ros.core.tasks.point_mass:PointMassTask",
}
GYM_PREFIX = "gym:"
ENTRY_POINT_GROUP = "loop_ros.tasks"


class TaskError(ConfigError):
    """A task name that finds nothing, or a task that breaks the ``Task`` contract."""


def make_task(name: str, **kwargs) -> Task:
    """The task called ``name`` (module docstring), checked against the ``Task`` contract."""
    if not isinstance(name, str) or not name:
        raise TaskError("task.name must be a non-empty string")
    if name.startswith(GYM_PREFIX):
        from loop_ros.core.tasks.gym_mujoco import GymMujocoTask

        return checked_task(GymMujocoTask(name.removeprefix(GYM_PREFIX), **kwargs))
    return checked_task(_instantiate(name, _find(name), kwargs))


def task_file_name(name: str) -> str:
    """A task name as a file-name part (``gym:Hopper-v5`` -> ``gym_Hopper-v5``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def known_task_names() -> list[str]:
    """Shipped tasks and installed entry points (``gym:<EnvId>`` and ``module:attribute`` come on top)."""
    return sorted(set(BUILTIN_TASKS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def _find(name: str):
    if name in BUILTIN_TASKS:
        return _import(BUILTIN_TASKS[name], name)
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            return ep.load()
        except Exception as error:  # a user's package: any import error is theirs to see
            raise TaskError(f"task {name!r}: entry point {ep.value!r} failed to load: {error!r}") from error
    if ":" in name:
        return _import(name, name)
    raise TaskError(f"unknown task {name!r}: known {known_task_names()}, or gym:<EnvId>, or package.module:attribute")


def _import(target: str, name: str):
    module_name, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise TaskError(f"task {name!r}: cannot import {target!r}: {error}") from error


def _instantiate(name: str, found, kwargs) -> Task:
    if isinstance(found, Task):
        return found
    if not callable(found):
        raise TaskError(f"task {name!r} is neither a Task nor a callable returning one")
    try:
        return found(**kwargs)
    except Exception as error:  # a user's constructor
        raise TaskError(f"task {name!r} could not be built: {error!r}") from error


def checked_task(task) -> Task:
    """``task`` when it keeps the ``Task`` contract the nodes rely on, else ``TaskError``."""
    if not isinstance(task, Task):
        raise TaskError(f"{task!r} is not a loop_ros Task")
    label = task.name or type(task).__name__
    if not isinstance(task.name, str) or not task.name:
        raise TaskError(f"task {label}: name must be a non-empty string")
    for dim in ("obs_dim", "act_dim"):
        value = getattr(task, dim)
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise TaskError(f"task {label}: {dim} must be a positive integer, not {value!r}")
    low = np.asarray(task.action_low, dtype=float)
    high = np.asarray(task.action_high, dtype=float)
    if low.shape != (task.act_dim,) or high.shape != (task.act_dim,):
        raise TaskError(f"task {label}: action bounds must have shape ({task.act_dim},)")
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
        raise TaskError(f"task {label}: action bounds must be finite with low < high")
    if task.state_message not in (ODOMETRY, ARRAY):
        raise TaskError(f"task {label}: state_message must be {ODOMETRY!r} or {ARRAY!r}")
    safe = np.asarray(task.safe_action(), dtype=float)
    if safe.shape != (task.act_dim,) or np.any(safe < low) or np.any(safe > high):
        raise TaskError(f"task {label}: safe_action must lie within the action bounds")
    return task

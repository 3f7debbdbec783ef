"""What the commands (``up``, ``train``, ``eval``, ``bench``) share: finding data files, a task's
params file and bundle, and its parameters with ``--set`` overrides (``core.params_file`` turns
them into config sections). No command imports another.

Standard library at the top: ``loop-ros up`` stays light (the nodes do the heavy imports).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable

PACKAGE = "loop_ros"
REPO_ROOT = Path(__file__).resolve().parents[1]


def data_path(relative: str | Path) -> Path:
    """Resolve a data file (``config/rc_car.yaml``, ``models/rc_car``) against, in order:
    the working directory, the source tree, and the installed share directories
    (colcon's ament index, then ``sys.prefix/share/loop_ros``). Absolute paths are kept.
    Returns the first candidate that exists, else the path relative to the source tree.
    """
    path = Path(relative).expanduser()
    if path.is_absolute():
        return path
    candidates = [Path.cwd() / path, REPO_ROOT / path]
    share = _ament_share_dir()
    if share is not None:
        candidates.append(share / path)
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / path)
    return next((c for c in candidates if c.exists()), REPO_ROOT / path)


def _ament_share_dir() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # not a colcon install: ament_index is absent or does not know us
        return None


def params_file_of(task, params: str | None = None) -> Path | None:
    """The one answer to "which params file": ``params`` when given, else the task's own
    ``params_file`` (resolved by ``data_path``), else None (every setting at its default)."""
    if params:
        return Path(params)
    return data_path(task.params_file) if task.params_file else None


def load_params(task, params_file: str | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Flat parameters of ``params_file_of(task, params_file)``, then ``overrides`` given as
    ``section.field=value`` (value parsed as YAML); ``task.name`` is always the task's."""
    from loop_ros.core.config import ConfigError
    from loop_ros.core.params_file import load_params_file

    path = params_file_of(task, params_file)
    if path is not None and not path.is_file():
        raise ConfigError(f"no params file at {path}")
    params = load_params_file(str(path)) if path is not None else {}
    params.update(parse_overrides(overrides))
    params["task.name"] = task.name
    return params


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """``--set`` items, ``section.field=value`` (value parsed as YAML), as ``{section.field: value}``."""
    import yaml

    from loop_ros.core.config import ConfigError

    parsed = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"override '{item}' is not section.field=value")
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"override '{item}': its value is not YAML ({error})") from error
    return parsed


def bundle_path(task, params: dict[str, Any]) -> Path | None:
    """The model bundle of ``task.bundle`` in the params, else the task's ``default_bundle``."""
    bundle = params.get("task.bundle") or task.default_bundle
    return data_path(bundle) if bundle else None


def command_line(subcommand: str, args) -> str:
    """``loop-ros <subcommand>`` with every option of ``args`` that has a value spelled out (defaults
    included; a list as its flag repeated), so the provenance reproduces the run."""
    import shlex

    parts = ["loop-ros", subcommand]
    for name, value in vars(args).items():
        flag = "--" + name.replace("_", "-")
        if name == "command" or value is None or value is False:
            continue
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            parts += [item for v in value for item in (flag, str(v))]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise ValueError(f"{text} is not >= 1")
    return value


TASK_HELP = ("task name: a shipped task (rc_car, rc_car_fast, rc_car_drift, point_mass), gym:<EnvId> (e.g. gym:Hopper-v5), an installed "
             "loop_ros.tasks entry point, or package.module:attribute")


DEFAULT_TASK = "rc_car"
"""The task of a command run without ``--task``."""


def add_task_argument(parser) -> None:
    """``--task`` of the headless commands (train, eval, offline, dataset, bench loop)."""
    parser.add_argument("--task", default=DEFAULT_TASK, type=task_argument, help=TASK_HELP)


def task_argument(text: str) -> str:
    """argparse type: a task name that ``core.tasks.make_task`` finds (else a usage error)."""
    import argparse

    from loop_ros.core.tasks import TaskError, make_task

    try:
        make_task(text)
    except TaskError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text

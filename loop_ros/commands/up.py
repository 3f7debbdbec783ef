"""Run a task's nodes as separate processes: `loop-ros up TASK [--fresh] [--duration S] [--robots N] [--foxglove]`.

The sim (when the task has one), the planner and the trainer (unless ``--no-trainer``) with the
task's params file, as ``launch/loop.launch.py`` starts them (``loop_ros.stack``); prints one
JSON summary merged from the nodes' own summaries. ``--fresh`` learns from scratch; ``--foxglove``
adds the Foxglove bridge. ``up`` creates the Ed25519 key pair that signs the trainer's models on
first use in ``--keys-dir`` (``stack.key_overrides``).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from loop_ros.core.config import MAX_ROBOTS
from loop_ros.core.tasks import make_task, task_file_name
from loop_ros.cpu_quota import CpuQuotaError
from loop_ros.nodes import write_json
from loop_ros.settings import TASK_HELP, load_params, params_file_of, parse_overrides, task_argument
from loop_ros.stack import DEFAULT_DOMAIN_ID, NodeOptions, bring_up, fresh_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", type=task_argument, help=TASK_HELP)
    parser.add_argument("--duration", type=float,
                        help="stop everything after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--json", help="also write the summary to this file")
    parser.add_argument("--params", help="ROS 2 params file (default: the task's own params file)")
    parser.add_argument("--domain-id", type=int,
                        help=f"ROS_DOMAIN_ID of the nodes (default: $ROS_DOMAIN_ID, else {DEFAULT_DOMAIN_ID})")
    parser.add_argument("--no-trainer", action="store_true", help="do not start the trainer (no online learning)")
    parser.add_argument("--trainer-cpus", type=float, default=None,
                        help="hold the trainer to this many cores with a cgroup CPU quota (e.g. 0.5: a slow "
                             "learner; needs root), to see how learning copes")
    parser.add_argument("--explore", action=argparse.BooleanOptionalAction, default=None,
                        help="the planner explores as Alg. 1 does (task.explore: the first action of a candidate "
                             "drawn by weight) while the trainer learns; default: with --fresh only (with a "
                             "deployed model the car drives the plan's mean, which is safer)")
    parser.add_argument("--keys-dir", type=Path,
                        help="Ed25519 key pair that signs the trainer's models and that the planner trusts, created "
                             "there if absent (default: $LOOP_ROS_KEYS_DIR, else ~/.ros/loop_ros/keys; with --fresh, a "
                             "new pair in the run's data_dir, so no model signed in another run is accepted)")
    parser.add_argument("--namespace", default="",
                        help="ROS namespace of every node (its topics and name move under it, e.g. /car0)")
    parser.add_argument("--log-level", choices=("debug", "info", "warn", "error", "fatal"),
                        help="the nodes' ROS log level")
    parser.add_argument("--use-sim-time", action="store_true",
                        help="the nodes take their time from /clock (use_sim_time; a lock-step sim publishes it)")
    parser.add_argument("--autostart", action=argparse.BooleanOptionalAction, default=True,
                        help="bring the nodes up in order through their lifecycle services (default); with "
                             "--no-autostart they wait unconfigured for your lifecycle manager (ros2 lifecycle set)")
    parser.add_argument("--robots", type=int, default=1,
                        help="a fleet: N sims and planners, each robot in its own namespace (robot0, robot1, ...), "
                             "all recorded by the one trainer, which publishes each model to every planner")
    parser.add_argument("--foxglove", action="store_true",
                        help="also start the Foxglove bridge: open Foxglove on ws://127.0.0.1:8765 (foxglove.port)")
    parser.add_argument("--record", type=Path, metavar="FILE",
                        help="also record the Foxglove view into this MCAP file, to open in Foxglove later (implies "
                             "--foxglove; foxglove.record); an existing file is not overwritten")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one setting of every node that has it, e.g. --set task.realtime_priority=50 "
                             "(repeatable; checked before anything starts; up's own settings, such as --fresh's, "
                             "and a node's own block in the params file win)")
    parser.add_argument("--fresh", action="store_true",
                        help="learn from scratch: the trainer records into a new temporary data_dir (kept after "
                             "the run) and the planner starts without a model, so every model it uses is learned "
                             "in this run (while it has none it brakes); every published model is kept in "
                             "<data_dir>/models for evaluation")


def checked_settings(task, params: str | None, overrides: list[str]) -> tuple[str, ...]:
    """``--set`` items as the nodes' ``-p`` overrides (``ros_override``: typed as declared); each section
    they touch is checked with the params file's other values, as the nodes will check it
    (``ConfigError``: nothing starts)."""
    from loop_ros.core.config import ConfigError
    from loop_ros.core.params_file import ros_override, section_configs

    settings = parse_overrides(overrides)
    if "task.name" in settings:
        raise ConfigError("task.name is up's TASK argument, not a --set")
    arguments = tuple(ros_override(key, value) for key, value in settings.items())
    section_configs(load_params(task, params, overrides), {key.partition(".")[0] for key in settings})
    return arguments


def run(args: argparse.Namespace) -> int:
    task = make_task(args.task)
    if not 1 <= args.robots <= MAX_ROBOTS:
        print(f"loop-ros up: --robots must be in [1, {MAX_ROBOTS}]", file=sys.stderr)
        return 2
    params = params_file_of(task, args.params)
    if params is not None and not params.is_file():
        print(f"loop-ros up: no params file at {params}", file=sys.stderr)
        return 2
    from loop_ros.core.config import ConfigError
    from loop_ros.core.signing import SigningError

    record = args.record.expanduser().resolve() if args.record is not None else None
    if record is not None and record.exists():
        print(f"loop-ros up: --record: {record} exists (a recording is not overwritten)", file=sys.stderr)
        return 2
    record_setting = [f"foxglove.record={json.dumps(str(record), ensure_ascii=False)}"] if record else []
    try:
        settings = checked_settings(task, args.params, args.set + record_setting)
    except ConfigError as error:
        print(f"loop-ros up: {error}", file=sys.stderr)
        return 2

    fresh_dir = Path(tempfile.mkdtemp(prefix=f"loop-ros-fresh-{task_file_name(task.name)}-")) if args.fresh else None
    try:
        summary, clean = bring_up(task, params, args.duration, fresh_overrides(fresh_dir) if fresh_dir else None,
                                  trainer=not args.no_trainer, domain_id=args.domain_id,
                                  foxglove=args.foxglove or record is not None,
                                  explore=args.fresh if args.explore is None else args.explore,
                                  # --fresh: a key pair of the run's own, so no bundle signed in an earlier run is taken
                                  keys_dir=args.keys_dir or (fresh_dir / "keys" if fresh_dir else None),
                                  trainer_cpus=args.trainer_cpus,
                                  options=NodeOptions(args.namespace, args.log_level, args.use_sim_time, args.autostart),
                                  robots=args.robots,
                                  settings=settings)
    except (SigningError, CpuQuotaError) as error:  # a key pair that cannot be created or read; no quota
        print(f"loop-ros up: {error}", file=sys.stderr)
        return 2
    if fresh_dir:
        summary["fresh_data_dir"] = str(fresh_dir)
    print(json.dumps(summary, indent=2, sort_keys=True))
    if args.json:
        write_json(args.json, summary)
    return 0 if clean else 1

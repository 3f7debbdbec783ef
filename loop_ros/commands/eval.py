"""Evaluate a model bundle in the task's simulator: `loop-ros eval --task rc_car --controller safe-arc --bundle DIR`.

The planner runs on ONNX Runtime exactly as the planner node does (``read_bundle`` ->
``verify_bundle`` -> ``OrtPlanningModel`` -> ``ArcPlanner``), in evaluation mode
(``explore=False``: the first action of the final sampling mean). Episode statistics are
``core.episodes.evaluate_planner``'s (its docstring), plus an echo of the settings.
"""
from __future__ import annotations

import json
import sys

from loop_ros.settings import add_task_argument, bundle_path, load_params, positive_int

EVAL_CONTROLLERS = ("arc", "safe-arc", "actor", "cem", "mppi")


def add_arguments(parser) -> None:
    add_task_argument(parser)
    parser.add_argument("--controller", default=None, choices=EVAL_CONTROLLERS,
                        help="default: task.controller of the params. safe-arc plans with the constraint (safeARC); "
                             "arc and the baselines as safety.enabled of the params says, exactly as the planner node")
    parser.add_argument("--bundle", default=None, help="model bundle directory (default: task.bundle of the params)")
    parser.add_argument("--episodes", type=positive_int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="episode i starts from env.reset(seed + i)")
    parser.add_argument("--episode-steps", type=int, default=None, help="default: sim.episode_steps of the params")
    parser.add_argument("--params", default=None, help="ROS 2 params file (default: the task's own)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one setting, e.g. --set arc.population=100 (repeatable)")
    parser.add_argument("--json", default=None, help="write the results here")


def run(args) -> int:
    from loop_ros.core.bundle import BundleError
    from loop_ros.core.config import ConfigError
    from loop_ros.core.episodes import evaluate_bundle
    from loop_ros.core.tasks import make_task
    from loop_ros.core.tasks.base import NoSimulator

    try:
        task = make_task(args.task)
        params = load_params(task, args.params, args.set)
        bundle_dir = args.bundle or bundle_path(task, params)
        if bundle_dir is None:
            raise ConfigError(f"task {task.name!r} has no default bundle: give --bundle")
        controller = args.controller or params.get("task.controller", "arc")
        result = evaluate_bundle(task, controller, bundle_dir, args.episodes, params, args.seed, args.episode_steps)
    except (BundleError, ConfigError, NoSimulator) as error:
        print(f"loop-ros eval: {error}", file=sys.stderr)
        return 2
    summary = {key: result[key] for key in ("mean_return", "mean_cost", "violations_per_episode", "mean_speed",
                                            "target_speed", "mean_radius_error", "crashes", "mean_plan_ms")}
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0


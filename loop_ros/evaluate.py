"""Evaluate a model bundle in the sim: `loop-ros eval --task rc_car --controller safe-arc --bundle DIR`.

The planner runs on ONNX Runtime exactly as the planner node does (``read_bundle`` ->
``verify_bundle`` -> ``OrtPlanningModel`` -> ``ArcPlanner``), in evaluation mode
(``explore=False``: the first action of the final sampling mean). Episode statistics come
from ``evaluate_planner``, which ``loop_ros.train`` also uses for its periodic evaluations.

Statistics (JSON): ``mean_return``; ``mean_cost`` (steps with cost 1 per episode, i.e.
outside the keep-in circle or inside an obstacle); ``violations_per_episode`` (times per
episode the car enters a violating state); ``mean_speed`` (ground speed of the CoM, m/s,
mean over steps) against ``target_speed``; ``mean_radius_error`` (mean |distance from the
origin - circle radius| over steps, m; tasks with a circle only); ``crashes`` (episodes
that terminated early); plus per-episode lists and an echo of the settings.
Episode i starts from ``env.reset(seed=seed + i)`` and the planner draws its noise from
``default_rng(seed)``, so a run is reproducible and two bundles see the same starts.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any, Iterable

import numpy as np

EVAL_SECTIONS = ("arc", "safety", "runtime")
EVAL_CONTROLLERS = ("arc", "safe-arc", "actor", "cem", "mppi")


# ---------------------------------------------------------------- settings and envs


def load_params(task_name: str, params_file: str | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Flat parameters: ``params_file`` (default ``config/<task>.yaml`` when it exists), then
    ``overrides`` given as ``section.field=value`` (value parsed as YAML)."""
    import yaml

    from loop_ros.bench import find_params_file
    from loop_ros.core.config import load_params_file

    try:
        path = params_file or find_params_file(f"{task_name}.yaml")
    except FileNotFoundError:
        path = None
    params = load_params_file(path) if path else {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"override '{item}' is not section.field=value")
        params[key.strip()] = yaml.safe_load(value)
    return params


def section_configs(params: dict[str, Any], sections: Iterable[str] = EVAL_SECTIONS) -> dict[str, Any]:
    """The config dataclass of each section from flat parameters (other sections ignored)."""
    from loop_ros.core.config import build_section

    values: dict[str, dict[str, Any]] = {section: {} for section in sections}
    for key, value in params.items():
        section, _, name = key.partition(".")
        if section in values:
            values[section][name] = value
    return {section: build_section(section, fields) for section, fields in values.items()}


def make_env(task_name: str, safety, episode_steps: int | None = None, seed: int | None = None):
    """The sim env of a task (``RcCarEnv`` or ``PointMassEnv``); ``env.task`` is its Task."""
    kwargs = {"safety": safety, "seed": seed}
    if episode_steps:
        kwargs["episode_steps"] = int(episode_steps)
    if task_name == "rc_car":
        from loop_ros.sim.rc_car_env import RcCarEnv

        return RcCarEnv(**kwargs)
    if task_name == "point_mass":
        from loop_ros.sim.point_mass_env import PointMassEnv

        return PointMassEnv(**kwargs)
    raise ValueError(f"no sim env for task '{task_name}' (rc_car, point_mass)")


# ---------------------------------------------------------------- episodes


def run_episode(env, planner, rng: np.random.Generator, seed: int) -> dict[str, Any]:
    """One evaluation episode of ``planner`` (``plan(state, rng, explore)``, ``reset()``) from ``env.reset(seed)``."""
    state, task = env.reset(seed=seed), env.task
    planner.reset()
    radius = getattr(task, "circle_radius", None)
    total_return = total_cost = plan_seconds = 0.0
    violations = infeasible = steps = 0
    speeds, radius_errors, violating, terminated = [], [], False, False
    for steps in range(1, env.episode_steps + 1):
        started = time.perf_counter()
        result = planner.plan(state, rng, explore=False)
        plan_seconds += time.perf_counter() - started
        state, reward, cost, terminated, truncated, info = env.step(result.action)
        total_return += reward
        total_cost += cost
        violations += int(cost > 0 and not violating)
        violating = cost > 0
        infeasible += int(result.metrics.get("all_infeasible", False))
        speeds.append(info["speed"])
        if radius is not None:
            radius_errors.append(abs(float(np.linalg.norm(task.position(state))) - radius))
        if terminated or truncated:
            break
    return {"return": total_return, "cost": total_cost, "violations": violations, "steps": steps,
            "mean_speed": float(np.mean(speeds)),
            "mean_radius_error": float(np.mean(radius_errors)) if radius_errors else None,
            "crashed": bool(terminated), "infeasible_steps": infeasible, "plan_ms": 1e3 * plan_seconds / steps}


def evaluate_planner(env, planner, episodes: int, seed: int = 0) -> dict[str, Any]:
    """Statistics of ``episodes`` evaluation episodes (module docstring) and their per-episode lists."""
    if episodes < 1:
        raise ValueError("evaluate at least one episode")
    rng = np.random.default_rng(seed)
    runs = [run_episode(env, planner, rng, seed + i) for i in range(episodes)]

    def mean(key):
        values = [run[key] for run in runs]
        return None if any(v is None for v in values) else float(np.mean(values))

    return {
        "mean_return": mean("return"), "std_return": float(np.std([run["return"] for run in runs])),
        "mean_cost": mean("cost"), "violations_per_episode": mean("violations"),
        "mean_speed": mean("mean_speed"), "target_speed": getattr(env.task, "target_speed", None),
        "mean_radius_error": mean("mean_radius_error"), "crashes": sum(run["crashed"] for run in runs),
        "infeasible_steps": sum(run["infeasible_steps"] for run in runs), "mean_plan_ms": mean("plan_ms"),
        "episodes": episodes, "per_episode": {key: [run[key] for run in runs] for key in runs[0]},
    }


# ---------------------------------------------------------------- command


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise ValueError(f"{text} is not >= 1")
    return value


def add_arguments(parser) -> None:
    parser.add_argument("--task", default="rc_car", choices=("rc_car", "point_mass"))
    parser.add_argument("--controller", default=None, choices=EVAL_CONTROLLERS,
                        help="default: task.controller of the params. safe-arc plans with the constraint (safeARC); "
                             "arc and the baselines as safety.enabled of the params says, exactly as the planner node")
    parser.add_argument("--bundle", default=None, help="model bundle directory (default: task.bundle of the params)")
    parser.add_argument("--episodes", type=positive_int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="episode i starts from env.reset(seed + i)")
    parser.add_argument("--episode-steps", type=int, default=None, help="default: sim.episode_steps of the params")
    parser.add_argument("--params", default=None, help="ROS 2 params file (default: config/<task>.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one setting, e.g. --set arc.population=100 (repeatable)")
    parser.add_argument("--json", default=None, help="write the results here")


def evaluate_bundle(task: str, controller: str, bundle_dir: str, episodes: int, seed: int = 0,
                    params: dict[str, Any] | None = None, episode_steps: int | None = None) -> dict[str, Any]:
    """Verify ``bundle_dir`` and evaluate it on ONNX Runtime; statistics plus settings echo."""
    from loop_ros.core.arc import ArcPlanner
    from loop_ros.core.bundle import read_bundle, verify_bundle
    from loop_ros.core.runtime import OrtPlanningModel

    params = params if params is not None else load_params(task)
    cfgs = section_configs(params)
    env = make_env(task, cfgs["safety"], episode_steps or params.get("sim.episode_steps"))  # else the env's default
    bundle = read_bundle(bundle_dir)
    verify_bundle(bundle, expected={"task": env.task.name, "obs_dim": env.task.obs_dim, "act_dim": env.task.act_dim})
    model = OrtPlanningModel(bundle, cfgs["runtime"])
    planner = ArcPlanner(model, env.task, cfgs["arc"], cfgs["safety"], controller)  # safety as the node decides it
    result = evaluate_planner(env, planner, episodes, seed)
    result["settings"] = {
        "task": task, "controller": controller, "bundle": str(bundle_dir), "bundle_version": bundle.version,
        "bundle_provenance": bundle.manifest["provenance"], "seed": seed, "episode_steps": env.episode_steps,
        "providers": model.providers, "arc": dataclasses.asdict(planner.arc),
        "safety": dataclasses.asdict(planner.safety), "runtime": dataclasses.asdict(cfgs["runtime"]),
    }
    return result


def run(args) -> int:
    params = load_params(args.task, args.params, args.set)
    from loop_ros.nodes import data_path  # stdlib only: finds models/ in the tree or the install

    from loop_ros.core.bundle import BundleError

    bundle_dir = args.bundle or str(data_path(params.get("task.bundle", f"models/{args.task}")))
    try:
        controller = args.controller or params.get("task.controller", "arc")
        result = evaluate_bundle(args.task, controller, bundle_dir, args.episodes, args.seed, params,
                                 args.episode_steps)
    except BundleError as error:
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


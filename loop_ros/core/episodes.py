"""Evaluation episodes of a planner in a task's simulator, shared by `loop-ros eval`, `train` and `offline`.

Statistics (JSON): ``mean_return``; ``mean_cost`` (steps with cost 1 per episode, i.e.
outside the keep-in circle or inside an obstacle); ``violations_per_episode`` (times per
episode the robot enters a violating state); ``mean_speed`` (``info["speed"]`` of the env,
mean over steps) against the task's ``target_speed``; ``mean_radius_error`` (mean distance
of the task's position from its first view circle over steps, m; tasks that draw a circle
only); ``crashes`` (episodes that terminated early); plus per-episode lists.
Episode i starts from ``env.reset(seed=seed + i)`` and the planner draws its noise from
``default_rng(seed)``, so a run is reproducible and two bundles see the same starts.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

EVAL_SECTIONS = ("arc", "safety", "runtime")
"""The settings a bundle's evaluation reads (the planner node's)."""


def circle_error(task, state: np.ndarray) -> float | None:
    """|distance from the centre - radius| of the task's first view circle, None without one."""
    circles, xy = task.view_circles(), task.position(state)
    if not circles or xy is None:
        return None
    cx, cy, radius = circles[0]
    return abs(float(np.hypot(xy[0] - cx, xy[1] - cy)) - radius)


def run_episode(env, planner, rng: np.random.Generator, seed: int) -> dict[str, Any]:
    """One evaluation episode of ``planner`` (``plan(state, rng, explore)``, ``reset()``) from ``env.reset(seed)``."""
    state, task = env.reset(seed=seed), env.task
    planner.reset()
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
        error = circle_error(task, state)
        if error is not None:
            radius_errors.append(error)
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
    return episode_statistics(env, [run_episode(env, planner, rng, seed + i) for i in range(episodes)])


def episode_statistics(env, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Statistics (module docstring) of the episodes ``runs`` (``run_episode``'s results) in ``env``."""
    def mean(key):
        values = [run[key] for run in runs]
        return None if any(v is None for v in values) else float(np.mean(values))

    return {
        "mean_return": mean("return"), "std_return": float(np.std([run["return"] for run in runs])),
        "mean_cost": mean("cost"), "violations_per_episode": mean("violations"),
        "mean_speed": mean("mean_speed"), "target_speed": env.task.target_speed,
        "mean_radius_error": mean("mean_radius_error"), "crashes": sum(run["crashed"] for run in runs),
        "infeasible_steps": sum(run["infeasible_steps"] for run in runs), "mean_plan_ms": mean("plan_ms"),
        "episodes": len(runs), "per_episode": {key: [run[key] for run in runs] for key in runs[0]},
    }


def bundle_planner(task, bundle_dir, params: dict[str, Any], controller: str):
    """The planner node's planner (``controller``, on ONNX Runtime) over ``bundle_dir``, verified
    against ``task`` and set by ``params`` (flat); returns (planner, bundle)."""
    from loop_ros.core.arc import ArcPlanner
    from loop_ros.core.bundle import read_bundle
    from loop_ros.core.bundle_verify import verify_bundle
    from loop_ros.core.params_file import section_configs
    from loop_ros.core.runtime import OrtPlanningModel

    cfgs = section_configs(params, EVAL_SECTIONS)
    bundle = read_bundle(bundle_dir)
    verify_bundle(bundle, expected=task.describe())
    model = OrtPlanningModel(bundle, cfgs["runtime"])
    return ArcPlanner(model, task, cfgs["arc"], cfgs["safety"], controller), bundle  # safety as the node decides it


def evaluate_bundle(task, controller: str, bundle_dir, episodes: int, params: dict[str, Any], seed: int = 0,
                    episode_steps: int | None = None) -> dict[str, Any]:
    """Verify ``bundle_dir`` against ``task`` and evaluate it on ONNX Runtime in the task's simulator,
    as the planner node runs it with ``params`` (flat); statistics plus settings echo."""
    from loop_ros.core.params_file import section_configs

    cfgs = section_configs(params, EVAL_SECTIONS)
    env = task.make_env(cfgs["safety"], episode_steps or params.get("sim.episode_steps"))  # else the env's default
    planner, bundle = bundle_planner(task, bundle_dir, params, controller)
    result = evaluate_planner(env, planner, episodes, seed)
    result["settings"] = {
        "task": task.name, "controller": controller, "bundle": str(bundle_dir), "bundle_version": bundle.version,
        "bundle_provenance": bundle.manifest["provenance"], "seed": seed, "episode_steps": env.episode_steps,
        "providers": planner.model.providers, "arc": dataclasses.asdict(planner.arc),
        "safety": dataclasses.asdict(planner.safety), "runtime": dataclasses.asdict(cfgs["runtime"]),
    }
    return result

"""How learned car controllers drive the circle (bench/RESULTS.md, "A drift task"): each bundle runs
``--episodes`` evaluation episodes headless, as `loop-ros eval` runs it (ONNX Runtime, explore off, the
controller its training evaluated it with), and is described as ``oracle_drift.episode`` describes the
true-model planner: return, speed, radius error and body slip angle while on the circle. The first
episode's path of each bundle is drawn on one PNG (``oracle_drift.draw_laps``).

    .venv/bin/python bench/rc_car_drift/describe_laps.py --task rc_car_fast --set safety.enabled=false \\
        --bundle loop=DIR --bundle pets=DIR --json laps.json --png laps.png
"""
import argparse
import json
from pathlib import Path

import numpy as np
from oracle_drift import draw_laps, episode

from loop_ros.core.bundle import MANIFEST
from loop_ros.core.config import ALGOS
from loop_ros.core.episodes import EVAL_SECTIONS, bundle_planner
from loop_ros.core.params_file import section_configs
from loop_ros.core.tasks import make_task
from loop_ros.settings import load_params


def controller_of(bundle_dir: str, default: str) -> str:
    """The controller ``loop-ros train`` evaluated the bundle with (its provenance's algo: pets -> cem),
    else ``default``."""
    with open(Path(bundle_dir) / MANIFEST, encoding="utf-8") as f:
        algo = json.load(f)["provenance"].get("algo")
    return ALGOS.get(algo, default)


def describe(task, params: dict, bundle_dir: str, episodes: int, controller: str) -> list[dict]:
    planner, _ = bundle_planner(task, bundle_dir, params, controller_of(bundle_dir, controller))
    env = task.make_env(section_configs(params, EVAL_SECTIONS)["safety"], params.get("sim.episode_steps"))
    rows = []
    for seed in range(episodes):
        rng = np.random.default_rng(seed)
        planner.reset()
        rows.append(episode(env, lambda obs: planner.plan(obs, rng, explore=False).action, seed))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="rc_car_fast")
    parser.add_argument("--bundle", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--controller", default="arc", help="for bundles whose provenance names no algo")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--json", required=True)
    parser.add_argument("--png", required=True)
    args = parser.parse_args()
    task = make_task(args.task)
    params = load_params(task, None, args.set)
    results, paths = {}, {}
    for item in args.bundle:
        name, _, directory = item.partition("=")
        rows = describe(task, params, directory, args.episodes, args.controller)
        paths[name] = rows[0]["path"]
        results[name] = [{key: value for key, value in row.items() if key != "path"} for row in rows]
        print(name, json.dumps(results[name]), flush=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    draw_laps(paths, Path(args.png))


if __name__ == "__main__":
    main()

"""How learned car controllers drive the circle (bench/RESULTS.md, "A drift task"): each bundle runs
``--episodes`` evaluation episodes headless, as `loop-ros eval` runs it (ONNX Runtime, explore off, the
controller its training evaluated it with), and is described as ``oracle_drift.episode`` describes the
true-model planner: return, speed, radius error, body slip angle and steer while on the circle, and the
radius error over the whole episode. The first episode's path of each bundle is drawn on one PNG
(``oracle_drift.draw_laps``), and with ``--trace`` its slip, speed and radius error over time on another.

    .venv/bin/python bench/rc_car_drift/describe_laps.py --task rc_car_fast --set safety.enabled=false \\
        --bundle loop=DIR --bundle pets=DIR --json laps.json --png laps.png [--trace trace.png]
"""
import argparse
import json
from pathlib import Path

import numpy as np
from oracle_drift import draw_laps, episode
from PIL import Image

from loop_ros.bench.curves import draw_curves
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


def describe(env, params: dict, bundle_dir: str, episodes: int, controller: str) -> list[dict]:
    planner, _ = bundle_planner(env.task, bundle_dir, params, controller_of(bundle_dir, controller))
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
    parser.add_argument("--trace", help="PNG of the first episodes' slip, speed and radius error over time")
    args = parser.parse_args()
    task = make_task(args.task)
    params = load_params(task, None, args.set)
    env = task.make_env(section_configs(params, EVAL_SECTIONS)["safety"], params.get("sim.episode_steps"))
    results, paths = {}, {}
    for item in args.bundle:
        name, _, directory = item.partition("=")
        rows = describe(env, params, directory, args.episodes, args.controller)
        paths[name] = rows[0]["path"]
        results[name] = [{key: value for key, value in row.items() if key != "path"} for row in rows]
        print(name, json.dumps(results[name]), flush=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    draw_laps(paths, Path(args.png))
    if args.trace:
        draw_traces(paths, env.control_dt, task.circle_radius, Path(args.trace))


def draw_traces(paths: dict[str, list], control_dt: float, circle_radius: float, path: Path) -> None:
    """Three plots stacked on one PNG: |slip| (deg), tangential speed (m/s) and signed radius error
    (m, + outside) of each named path (``oracle_drift.episode``'s) against time."""
    quantities = {"|body slip| (deg)": lambda row: row[2], "tangential speed (m/s)": lambda row: row[3],
                  "radius error d - R (m)": lambda row: float(np.hypot(row[0], row[1])) - circle_radius}
    images = []
    for title, value in quantities.items():
        curves = {name: {"env_steps": [control_dt * (k + 1) for k in range(len(rows))],
                         "mean": [value(row) for row in rows], "std": [0.0] * len(rows)}
                  for name, rows in paths.items()}
        images.append(draw_curves(curves, title, "time (s)"))
    stacked = Image.new("RGB", (images[0].width, sum(image.height for image in images)), "white")
    for k, image in enumerate(images):
        stacked.paste(image, (0, k * images[0].height))
    stacked.save(path)


if __name__ == "__main__":
    main()

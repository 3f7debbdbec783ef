"""Headless delay harness for the car (bench/RESULTS.md, "Delay and its compensation, headless"): the
action planned on state x_m is applied j-1 steps later (j = 1: to x_m itself), plans pipelined one a
step; with 0 < c < j each plan starts from x_{m+c} predicted through the c actions already in flight.
Episodes start from ``env.reset(seed=i)``, or with ``--node-starts`` as the sim node's do (``reset(seed=0)``,
then ``reset()`` from the generator that one seeded); the planner is the node's (the params' controller,
ONNX Runtime).

    .venv/bin/python bench/delay/headless_delay.py J C EPISODES [--bundle DIR] [--params FILE] [--node-starts]
"""
import argparse
import json

import numpy as np

from loop_ros.core.episodes import bundle_planner
from loop_ros.core.params_file import section_configs
from loop_ros.core.tasks import make_task
from loop_ros.settings import load_params


def main(j: int, c: int, episodes: int, bundle: str = "models/rc_car", params_file: str | None = None,
         node_starts: bool = False) -> dict:
    task = make_task("rc_car")
    params = load_params(task, params_file)
    planner, _ = bundle_planner(task, bundle, params, params["task.controller"])
    env = task.make_env(section_configs(params, ("safety",))["safety"], params.get("sim.episode_steps"))
    rng, out = np.random.default_rng(0), []
    for episode in range(episodes):
        x = env.reset() if node_starts and episode else env.reset(seed=0 if node_starts else episode)
        planner.reset()
        in_flight = [np.asarray(task.safe_action(), np.float32)] * (j - 1)  # actions of steps m .. m+j-2
        total_return = total_cost = 0.0
        crashed = False
        for _ in range(env.episode_steps):
            obs = np.asarray(x, np.float32)
            if c:
                obs = planner.predict_states(obs, np.asarray(in_flight[:c], np.float32))[c].astype(np.float32)
            in_flight.append(np.asarray(planner.plan(obs, rng, explore=False).action, np.float32))
            x, reward, cost, terminated, truncated, _ = env.step(in_flight.pop(0))
            total_return, total_cost = total_return + reward, total_cost + cost
            if terminated or truncated:
                crashed = bool(terminated)
                break
        out.append({"return": round(total_return, 1), "violation_ticks": total_cost, "crashed": crashed})
    return {"j": j, "c": c, "bundle": bundle, "node_starts": node_starts, "episodes": out,
            "mean_return": float(np.mean([o["return"] for o in out])),
            "violation_ticks": sum(o["violation_ticks"] for o in out), "crashes": sum(o["crashed"] for o in out)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("j", type=int)
    parser.add_argument("c", type=int)
    parser.add_argument("episodes", type=int)
    parser.add_argument("--bundle", default="models/rc_car")
    parser.add_argument("--params")
    parser.add_argument("--node-starts", action="store_true")
    args = parser.parse_args()
    print(json.dumps(main(args.j, args.c, args.episodes, args.bundle, args.params, args.node_starts)))

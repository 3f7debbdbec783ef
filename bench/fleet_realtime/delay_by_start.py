"""The shipped car model, headless, from the start states the real-time sim gives (``RcCarEnv(seed=0)``,
then each reset continuing its generator, as ``nodes/sim.py`` does), with its actions applied ``d``
control steps late and no delay compensation: per episode index, crashes and violation steps over
several planner seeds (bench/RESULTS.md, "The fleet with its planners under SCHED_FIFO").

    python bench/fleet_realtime/delay_by_start.py EPISODES SEEDS DELAYS   # e.g. 7 3 0,1,2,3
"""
import sys

import numpy as np

from loop_ros.core.episodes import bundle_planner
from loop_ros.core.params_file import section_configs
from loop_ros.core.tasks import make_task
from loop_ros.settings import bundle_path, load_params


def main(episodes: int, seeds: int, delays: list[int]) -> None:
    task = make_task("rc_car")
    params = load_params(task)
    safety = section_configs(params, ("safety",))["safety"]
    planner, _ = bundle_planner(task, bundle_path(task, params), params, "arc")
    for delay in delays:
        table = np.zeros((episodes, 2), dtype=int)  # (crashes, violation steps) per episode index
        for seed in range(seeds):
            env = task.make_env(safety, 500, seed=0)
            state, rng = env.observation(), np.random.default_rng(seed)
            for episode in range(episodes):
                planner.reset()
                in_flight = [np.zeros(task.act_dim)] * delay  # what the car still executes meanwhile
                for _ in range(env.episode_steps):
                    in_flight.append(planner.plan(state, rng, explore=False).action)
                    state, _, cost, terminated, truncated, _ = env.step(in_flight.pop(0))
                    table[episode, 1] += cost > 0
                    if terminated or truncated:
                        break
                table[episode, 0] += terminated
                state = env.reset()
        print(f"delay {delay}: (crashes of {seeds}, violation steps) per episode index:",
              [tuple(int(v) for v in row) for row in table], flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), [int(d) for d in sys.argv[3].split(",")])

"""The shipped car model, headless, from the start states the real-time sim gives (as
``bench/fleet_realtime/delay_by_start.py``), with plans that come a tick late at random, as in the
real-time loop: each step's plan is on time with probability 1 - p (its first action drives that
step), else late (that step runs the previous plan's next action, the late plan drives the step
after, and no plan is made on that next state). ``first``: a late plan starts with its first
action, as ``TickPolicy`` does; ``shifted``: with the action it planned for the step it acts on (a
change tried and not kept: it made no difference here). Per episode index: crashes and violation
steps over several seeds; and the mean return (bench/RESULTS.md, "The sixth start again: late plans
and a starved sim").

    python bench/late_plans/late_by_start.py EPISODES SEEDS P[,P...]   # e.g. 6 3 0.25,0.5
"""
import sys

import numpy as np

from loop_ros.core.episodes import bundle_planner
from loop_ros.core.params_file import section_configs
from loop_ros.core.tasks import make_task
from loop_ros.settings import bundle_path, load_params


def run(planner, task, safety, episodes: int, seed: int, p: float, shifted: bool):
    """(crashes, violation steps, return) per episode index for one seed."""
    env = task.make_env(safety, 500, seed=0)
    state, rng, late_rng = env.observation(), np.random.default_rng(seed), np.random.default_rng(1000 + seed)
    rows = []
    for _ in range(episodes):
        planner.reset()
        previous, steps_used, violation_steps, total, terminated = None, 0, 0, 0.0, False
        queue = []  # actions decided for the coming steps
        for _ in range(env.episode_steps):
            if not queue:
                plan = planner.plan(state, rng, explore=False)
                if previous is not None and late_rng.random() < p:  # late: the held plan drives this step
                    held = previous.mean_actions[min(steps_used, len(previous.mean_actions) - 1)]
                    queue = [held, plan.mean_actions[1] if shifted else plan.action]
                    steps_used = 2 if shifted else 1
                else:
                    queue, steps_used = [plan.action], 1
                previous = plan
            state, reward, cost, terminated, truncated, _ = env.step(queue.pop(0))
            total += reward
            violation_steps += cost > 0
            if terminated or truncated:
                break
        rows.append((int(terminated), int(violation_steps), total))
        state = env.reset()
    return rows


def main(episodes: int, seeds: int, ps: list[float]) -> None:
    task = make_task("rc_car")
    params = load_params(task)
    safety = section_configs(params, ("safety",))["safety"]
    planner, _ = bundle_planner(task, bundle_path(task, params), params, "arc")
    for p in ps:
        for shifted in (False, True):
            runs = [run(planner, task, safety, episodes, seed, p, shifted) for seed in range(seeds)]
            table = np.array(runs)  # (seeds, episodes, 3)
            print(f"p {p} {'shifted' if shifted else 'first'}: crashes per episode index "
                  f"{table[:, :, 0].sum(0).astype(int).tolist()}, violation steps {table[:, :, 1].sum(0).astype(int).tolist()}, "
                  f"mean return {table[:, :, 2].mean():.1f}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), [float(v) for v in sys.argv[3].split(",")])

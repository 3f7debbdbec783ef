"""``loop-ros bench smoothing``: closed-loop return of ARC's mean/variance smoothing factors."""
from __future__ import annotations

import itertools

SMOOTHING = {"paper (0.1, 0.1)": (0.1, 0.1), "authors (1.0, 0.9)": (1.0, 0.9),
             "(0.5, 0.5)": (0.5, 0.5), "(1.0, 1.0)": (1.0, 1.0)}


def bench_smoothing(episodes: int = 20, steps: int = 40) -> dict:
    """Closed-loop return on the point mass with its exact model (a poor actor, a rough value),
    Table 3 settings otherwise, for each (alpha_mean, alpha_var): which default plans best."""
    import numpy as np

    from loop_ros.core.arc import ArcPlanner
    from loop_ros.core.config import ArcConfig, SafetyConfig
    from loop_ros.core.tasks.point_mass import PointMassModel, PointMassTask, point_mass_step

    task, model = PointMassTask(), PointMassModel(ensemble_size=5, noise_std=0.02, actor_target=(-1.0, 0.0))
    results = {}
    for (name, (alpha_mean, alpha_var)), eta in itertools.product(SMOOTHING.items(), (1.0, 0.1)):
        arc = ArcConfig(alpha_mean=alpha_mean, alpha_var=alpha_var, eta=eta)
        returns = []
        for episode in range(episodes):
            rng = np.random.default_rng(episode)
            planner, s, total = ArcPlanner(model, task, arc, SafetyConfig()), np.zeros(4, np.float32), 0.0
            s[:2] = rng.uniform(-1, 1, 2)
            for _ in range(steps):
                a = planner.plan(s, rng).action
                s_next = point_mass_step(s, a).astype(np.float32)
                total += float(task.reward(s, a, s_next))
                s = s_next
            returns.append(total)
        results[f"{name}, eta {eta}"] = {"mean_return": float(np.mean(returns)), "std_return": float(np.std(returns))}
    return {"task": "point_mass", "episodes": episodes, "steps": steps, "results": results}

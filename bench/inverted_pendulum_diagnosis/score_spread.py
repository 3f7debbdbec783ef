"""How much the terminal value weighs in ARC's candidate weights on InvertedPendulum-v5 (bench/RESULTS.md,
"Where LOOP's early InvertedPendulum runs fail"): on 3 episodes x at most 30 steps of each bundle's own
evaluation-mode plans, the std over candidates of the first iteration's scores and the effective sample
size 1 / sum(w^2) of its weights (the first iteration of ``ArcPlanner.plan``, restated here because the
planner does not report its weights), with the value and without it.

    .venv/bin/python bench/inverted_pendulum_diagnosis/score_spread.py <LOOP checkpoint> <PETS bundle>
"""
import sys

import numpy as np

from loop_ros.core.arc import candidate_weights, draw_plan_noise
from loop_ros.core.episodes import bundle_planner
from loop_ros.core.params_file import section_configs
from loop_ros.core.tasks import make_task
from loop_ros.settings import load_params

EPISODES, STEPS = 3, 30


def first_iteration_weights(planner, state: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N,), weights (N,)) of the first ARC iteration from ``state``."""
    model = planner.model
    noise = draw_plan_noise(rng, planner.arc, model.ensemble_size, model.obs_dim, model.act_dim)
    mean = planner._initial_mean()
    std = np.broadcast_to(planner.init_std, mean.shape)
    candidates = planner.sample_candidates(mean, std, planner.actor_prior(state, noise.actor), noise.gaussian[0])
    returns, _ = planner.evaluate(state, candidates, noise.dynamics[0])
    score = planner.score(returns)
    return score, candidate_weights(score, None, planner.arc, planner.safety)[0]


def spread(task, bundle: str, with_value: bool) -> tuple[float, float]:
    """Medians over the visited states of (effective sample size, score std)."""
    params = load_params(task, None, [] if with_value else ["arc.use_terminal_value=false"])
    planner, _ = bundle_planner(task, bundle, params, "arc")
    env = task.make_env(section_configs(params, ("safety",))["safety"], 1000)
    rng, ess, stds = np.random.default_rng(0), [], []
    for episode in range(EPISODES):
        state = env.reset(seed=episode)
        for _ in range(STEPS):
            score, weights = first_iteration_weights(planner, np.float32(state), rng)
            ess.append(1.0 / np.sum(weights**2))
            stds.append(np.std(score))
            state, _, _, terminated, _, _ = env.step(planner.plan(np.float32(state), rng).action)
            if terminated:
                break
    return float(np.median(ess)), float(np.median(stds))


def main(loop_checkpoint: str, pets_bundle: str) -> None:
    task = make_task("gym:InvertedPendulum-v5")
    for bundle, with_value in ((loop_checkpoint, True), (loop_checkpoint, False), (pets_bundle, False)):
        ess, std = spread(task, bundle, with_value)
        print(bundle, "value" if with_value else "no value", f"ESS median {ess:.1f}", f"score std median {std:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])

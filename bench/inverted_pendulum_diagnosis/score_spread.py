"""How much the terminal value weighs in ARC's candidate weights on InvertedPendulum-v5 (bench/RESULTS.md,
"Where LOOP's early InvertedPendulum runs fail"): on 3 episodes x at most 30 steps of each bundle's own
evaluation-mode plans, the std over candidates of the first iteration's scores and the effective sample
size 1 / sum(w^2) of its weights, with the value and without it.

    .venv/bin/python bench/inverted_pendulum_diagnosis/score_spread.py <LOOP checkpoint> <PETS bundle>
"""
import sys, numpy as np
from loop_ros.core.tasks import make_task
from loop_ros.settings import load_params
from loop_ros.core.episodes import bundle_planner
from loop_ros.core.arc import draw_plan_noise, candidate_weights
from loop_ros.core.params_file import section_configs
task = make_task("gym:InvertedPendulum-v5")
for bundle, novalue in ((sys.argv[1], False), (sys.argv[1], True), (sys.argv[2], True)):
    params = load_params(task, None, ["arc.use_terminal_value=false"] if novalue else [])
    planner, _ = bundle_planner(task, bundle, params, "arc")
    cfgs = section_configs(params, ("safety", "arc"))
    env = task.make_env(cfgs["safety"], 1000)
    rng = np.random.default_rng(0)
    ess, spread = [], []
    for ep in range(3):
        s = env.reset(seed=ep)
        for t in range(30):
            arc, m = planner.arc, planner.model
            noise = draw_plan_noise(rng, arc, m.ensemble_size, m.obs_dim, m.act_dim)
            mean = planner._initial_mean(); std = np.broadcast_to(planner.init_std, mean.shape)
            cands = planner.sample_candidates(mean, std, planner.actor_prior(np.float32(s), noise.actor), noise.gaussian[0])
            returns, _ = planner.evaluate(np.float32(s), cands, noise.dynamics[0])
            score = planner.score(returns)
            w, _ = candidate_weights(score, None, arc, planner.safety)
            ess.append(1.0 / np.sum(w**2)); spread.append(np.std(score))
            res = planner.plan(np.float32(s), rng)
            s, r, c, term, trunc, info = env.step(res.action)
            if term: break
    print(bundle, "no value" if novalue else "value", "ESS of 105: median %.1f" % np.median(ess), "score std median %.3f" % np.median(spread))

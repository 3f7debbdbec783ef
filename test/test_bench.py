"""The plan benchmark's FLOP accounting: the layers-only ceiling runs the plan's own matmul work."""
import numpy as np

from loop_ros.bench import plan
from loop_ros.core.arc import ArcPlanner


def test_layers_only_ceiling_runs_the_matmul_work_of_the_plan():
    settings = plan.preset_settings("safe-rc-car")
    model, weight_shapes = plan.build_model("safe-rc-car", "ort-cpu", settings)
    counter = plan.FlopCountingModel(model, weight_shapes)
    state = plan.bench_start_state(settings["task"])
    ArcPlanner(counter, settings["task"], settings["arc"], settings["safety"]).plan(state, np.random.default_rng(0))
    arc = settings["arc"]
    run_once, layer_flops = plan.layers_runner(plan.iteration_layers(settings, model.ensemble_size),
                                               arc.particles * arc.population, settings["runtime"])
    run_once()
    # the planner also rolls the actor prior (n_actor rollouts, once per plan) through the model
    prior = counter.flops - arc.iterations * layer_flops
    dynamics_and_actor_per_row = counter.per_row["dynamics"] + counter.per_row["actor"]
    assert prior == arc.horizon * arc.n_actor * dynamics_and_actor_per_row

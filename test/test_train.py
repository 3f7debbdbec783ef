"""Training (Alg. 1): LOOP learns the point mass; schedule of SAC updates and model fits;
the run writes metrics and bundles that verify, and is reproducible for a seed."""
from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch

from loop_ros import cli
from loop_ros.commands import train
from loop_ros.core.bundle import read_bundle
from loop_ros.core.bundle_verify import verify_bundle
from loop_ros.core.config import ArcConfig, EnsembleConfig, SacConfig, SafetyConfig, TrainerConfig
from loop_ros.core.arc import ArcPlanner
from loop_ros.core.tasks.point_mass import PointMassModel, PointMassTask
from loop_ros.core.trainer import LoopTrainer
from loop_ros.settings import command_line
from loop_ros.sim.point_mass_env import PointMassEnv

torch.set_num_threads(1)

# Small networks and a 1.5 s horizon: the toy task is learned in a few hundred steps.
TOY = ["--task", "point_mass", "--seed-steps", "200", "--eval-episodes", "2", "--no-progress",
       "--set", "ensemble.hidden=[32,32]", "--set", "sac.hidden=[64,64]", "--set", "sac.batch_size=64",
       "--set", "arc.horizon=15", "--set", "arc.population=50", "--set", "arc.iterations=2",
       "--set", "arc.particles=1"]


def scripted_return(episodes: int = 2) -> float:
    """Mean return of a saturated PD controller (kp=10, kd=5) over the evaluation starts
    (``env.reset(seed=i)``): near the best possible (~-9.2; a random policy gets ~-35)."""
    env, total = PointMassEnv(PointMassTask()), 0.0
    for i in range(episodes):
        state = env.reset(seed=i)
        for _ in range(env.episode_steps):
            action = np.clip(10.0 * (env.task.goal - state[:2]) - 5.0 * state[2:], -1.0, 1.0)
            state, reward, *_ = env.step(action)
            total += reward
    return total / episodes


def test_loop_learns_the_point_mass_and_exports_a_verified_bundle(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", *TOY, "--algo", "loop", "--steps", "400", "--seed", "0",
                     "--eval-every", "200", "--out", str(out)]) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    rows = metrics["evaluations"]
    returns = [row["eval_return"] for row in rows]
    assert [row["env_steps"] for row in rows] == [0, 200, 400]
    assert rows[0]["actor_divergence"] is None and rows[-1]["actor_divergence"] > 0.0  # none while seeding
    reference = scripted_return()
    assert returns[0] < reference - 20.0  # step 0: uniform random actions
    assert returns[-1] > reference - 5.0  # after 400 steps: close to the PD controller
    assert returns[-1] > returns[0] + 15.0
    with open(out / "metrics.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert [float(r["eval_return"]) for r in csv_rows] == pytest.approx(returns)

    bundle = read_bundle(out / "bundle")
    verify_bundle(bundle, expected={"task": "point_mass", "obs_dim": 4, "act_dim": 2, "ensemble_size": 5})
    provenance = bundle.manifest["provenance"]
    assert provenance["steps"] == 400 and provenance["seed"] == 0
    assert provenance["eval_return"] == pytest.approx(returns[-1])
    assert provenance["command"] == metrics["command"]
    assert "--set arc.horizon=15" in provenance["command"]
    assert provenance["settings"]["arc"]["horizon"] == 15
    assert bundle.manifest["extra"]["algo"] == "loop"
    verify_bundle(read_bundle(out / "checkpoint_200"))
    assert not (out / "checkpoint_400").exists()  # the last evaluation writes the final bundle instead


def steps_of_the_training_env(monkeypatch, outcome=lambda result: result) -> list[tuple]:
    """The (obs, reward, cost, terminated, truncated, info) of every step of the training env of the
    next ``train`` (the first toy env it makes; the evaluation env comes second), as ``outcome`` makes them
    from the toy's own."""
    envs, make_env = [], PointMassTask.make_env

    def recording_env(task, *args, **kwargs):
        env, steps = make_env(task, *args, **kwargs), []
        step = env.step

        def recorded_step(action):
            steps.append(outcome(step(action)))
            return steps[-1]

        env.step = recorded_step
        envs.append(steps)
        return env

    monkeypatch.setattr(PointMassTask, "make_env", recording_env)
    return envs


def train_toy_sac(out, *extra) -> list[dict]:
    """300 steps of SAC on the toy, evaluated every 100; its evaluation rows."""
    assert cli.main(["train", *TOY, "--algo", "sac", "--steps", "300", "--seed", "0", "--eval-every", "100",
                     "--eval-episodes", "1", *extra, "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())["evaluations"]


def test_the_cumulative_training_cost_sums_the_cost_of_every_training_step(tmp_path, monkeypatch):
    """train_cost_total (the paper's Fig. 6 figure) against the costs the training env itself returned:
    a keep-in circle of 0.3 m that the random seeding phase leaves."""
    envs = steps_of_the_training_env(monkeypatch)
    rows = train_toy_sac(tmp_path / "run", "--set", "safety.keep_in_radius=0.3")
    costs = [cost for _, _, cost, *_ in envs[0]]
    assert rows[-1]["train_cost_total"] == pytest.approx(sum(costs)) and rows[-1]["train_cost_total"] > 0
    assert [row["train_cost_total"] for row in rows] == sorted(row["train_cost_total"] for row in rows)
    assert rows[0]["train_cost_total"] == 0.0  # before the first step


def test_train_crashes_counts_the_training_episodes_that_terminated(tmp_path, monkeypatch):
    """train_crashes against the terminations the training env itself returned: the toy, made to
    terminate when it leaves a 0.3 m circle (which the random seeding phase does)."""
    def terminate_outside(result):
        obs, reward, cost, _, truncated, info = result
        return obs, reward, cost, bool(np.hypot(obs[0], obs[1]) > 0.3), truncated, info

    envs = steps_of_the_training_env(monkeypatch, terminate_outside)
    rows = train_toy_sac(tmp_path / "run")
    crashes = sum(terminated for _, _, _, terminated, *_ in envs[0])
    assert rows[-1]["train_crashes"] == crashes > 0 and rows[0]["train_crashes"] == 0
    assert [row["train_crashes"] for row in rows] == sorted(row["train_crashes"] for row in rows)
    assert rows[-1]["train_crashes"] <= rows[-1]["train_episodes"]


def test_same_seed_same_run(tmp_path):
    def run(name):
        cli.main(["train", *TOY, "--algo", "loop", "--steps", "220", "--seed", "3", "--eval-every", "1000",
                  "--out", str(tmp_path / name)])
        rows = json.loads((tmp_path / name / "metrics.json").read_text())["evaluations"]
        return [{k: v for k, v in row.items() if k not in ("wall_time_s", "eval_plan_ms", "fit_seconds")} for row in rows]

    first = run("a")
    assert len(first) == 2 and first[1]["fits"] == 1 and first[1]["sac_updates"] == 21
    assert run("b") == first


def test_command_line_reproduces_the_arguments():
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--steps", "50", "--out", "o d", "--no-progress", "--set", "arc.horizon=4",
                              "--set", "ensemble.hidden=[8, 8]"])
    import shlex

    words = shlex.split(command_line("train", args))
    assert words[:2] == ["loop-ros", "train"]
    assert parser.parse_args(words[2:]) == args


# ---------------------------------------------------------------- the trainer's schedule

TINY = dict(arc=ArcConfig(horizon=2, population=8, iterations=1, particles=1), safety=SafetyConfig(),
            ensemble=EnsembleConfig(ensemble_size=2, num_elites=2, hidden=(8,), max_epochs=1, update_every=5),
            sac=SacConfig(hidden=(8,), batch_size=4))


def feed(trainer: LoopTrainer, steps: int, rng: np.random.Generator) -> list[tuple[int, bool, bool]]:
    """Add random transitions; per step (steps, updated SAC, fitted the model)."""
    log = []
    for _ in range(steps):
        s = rng.standard_normal(4)
        a = trainer.act(s, rng, explore=True)
        trainer.add_transition(s, a, -1.0, s + 0.1, False)
        updated = bool(trainer.update())
        fitted = trainer.refit_model_if_due() is not None
        log.append((trainer.steps, updated, fitted))
    return log


def test_loop_schedule_seeding_then_sac_every_step_and_a_fit_every_k_m():
    trainer = LoopTrainer(PointMassTask(), algo="loop", seed=0, schedule=TrainerConfig(seed_steps=10), **TINY)
    log = feed(trainer, 21, np.random.default_rng(0))
    assert [step for step, _, fitted in log if fitted] == [10, 15, 20]  # after seeding, then every K_m = 5
    assert [step for step, updated, _ in log if updated] == list(range(10, 22))
    assert trainer.sac_updates == 12 and trainer.fits == 3


def test_actor_divergence_is_the_executed_actions_distance_from_the_actors_mean():
    trainer = LoopTrainer(PointMassTask(), algo="sac", seed=0, schedule=TrainerConfig(seed_steps=10), **TINY)
    rng, state = np.random.default_rng(0), np.array([0.3, -0.2, 0.1, 0.0], np.float32)
    assert trainer.actor_divergence(state, trainer.act(state, rng)) is None  # seeding: random actions
    feed(trainer, 10, rng)
    with torch.no_grad():  # the actor network itself, with noise 0: its mean action
        mean = trainer.sac.actor(torch.as_tensor(state[None]), torch.zeros(1, 2))[0].numpy()
    assert trainer.actor_divergence(state, trainer.act(state, rng, explore=False)) == pytest.approx(0.0, abs=1e-6)
    sampled = trainer.act(state, rng, explore=True)  # the actor's sample: away from its mean
    assert trainer.actor_divergence(state, sampled) == pytest.approx(np.linalg.norm(sampled - mean), rel=1e-5)
    assert trainer.actor_divergence(state, sampled) > 0.0


def test_sac_trains_no_model_and_pets_no_actor(tmp_path):
    rng = np.random.default_rng(0)
    sac = LoopTrainer(PointMassTask(), algo="sac", seed=0, schedule=TrainerConfig(seed_steps=10), **TINY)
    feed(sac, 20, rng)
    assert sac.fits == 0 and sac.sac_updates == 11
    assert sac.planner().controller == "actor"
    sac.export(tmp_path / "sac", 1, {"command": "t", "steps": 20, "seed": 0, "eval_return": 0.0, "wall_time_s": 0.0})
    assert sac.fits == 1  # fitted for the bundle only
    verify_bundle(read_bundle(tmp_path / "sac"))

    pets = LoopTrainer(PointMassTask(), algo="pets", seed=0, schedule=TrainerConfig(seed_steps=10), **TINY)
    feed(pets, 20, rng)
    assert pets.sac_updates == 0 and pets.fits == 3
    planner = pets.planner()
    assert planner.controller == "cem" and not planner.arc.use_terminal_value and planner.arc.n_actor == 0


@pytest.mark.parametrize("safety_enabled", [False, True])
def test_safety_is_decided_as_for_the_planner_node(safety_enabled):
    """config.controller_safety: safe-loop always plans with the constraint, sac (the actor) never, loop
    and pets as safety.enabled says, exactly as the 'arc' and 'cem' controllers of the node and eval."""
    safety = SafetyConfig(enabled=safety_enabled)
    for algo, enabled in (("loop", safety_enabled), ("safe-loop", True), ("pets", safety_enabled), ("sac", False)):
        trainer = LoopTrainer(PointMassTask(), algo=algo, **{**TINY, "safety": safety})
        assert trainer.safety.enabled is enabled, algo
        assert trainer.safety == ArcPlanner(PointMassModel(), PointMassTask(), TINY["arc"], safety,
                                            trainer.controller).safety


def test_exported_graphs_hold_no_subnormal_weights(tmp_path):
    """Subnormal weights make every multiply slow in torch and ONNX Runtime (trainer docstring)."""
    import onnx
    from onnx import numpy_helper

    trainer = LoopTrainer(PointMassTask(), algo="loop", seed=0, schedule=TrainerConfig(seed_steps=10), **TINY)
    feed(trainer, 10, np.random.default_rng(0))
    torch.set_flush_denormal(False)  # as in a thread that never ran the trainer's entry points
    with torch.no_grad():
        trainer.ensemble.net.hidden_layers[0].weight[:, 0, :] = 1e-40
        trainer.sac.actor.net[0].weight[0, 0] = -1e-39
    assert trainer.ensemble.net.hidden_layers[0].weight[0, 0, 0].item() != 0.0
    trainer.export(tmp_path / "b", 1, {"command": "t", "steps": 10, "seed": 0, "eval_return": 0.0, "wall_time_s": 0.0})
    for name in ("dynamics", "actor"):
        weights = [numpy_helper.to_array(w) for w in onnx.load(tmp_path / "b" / f"{name}.onnx").graph.initializer]
        values = np.concatenate([w.ravel() for w in weights if w.dtype == np.float32])
        assert not np.any((values != 0) & (np.abs(values) < np.finfo(np.float32).tiny))
    assert trainer.ensemble.net.hidden_layers[0].weight[0, 0, 0].item() != 0.0  # the live net keeps its weights


def test_export_before_the_first_fit_is_refused(tmp_path):
    trainer = LoopTrainer(PointMassTask(), algo="loop", **TINY)
    with pytest.raises(RuntimeError, match="first model fit"):
        trainer.export(tmp_path / "b", 1, {})


def _rows(out) -> list[dict]:
    """A run's evaluations without the timing columns (they differ between runs of the same seed)."""
    rows = json.loads((out / "metrics.json").read_text())["evaluations"]
    return [{k: v for k, v in row.items() if k not in ("wall_time_s", "eval_plan_ms", "fit_seconds")} for row in rows]


RESUMABLE = [*TOY, "--algo", "loop", "--seed", "3", "--eval-every", "200", "--fit-max-seconds", "0"]


def test_a_resumed_run_goes_on_from_its_last_evaluation(tmp_path):
    """400 steps, then --resume to 600: the first 400 steps' evaluations are the uninterrupted run's,
    and the run goes on from the saved learner, replay and counters to the same step counts. (After
    the save the two differ: the resumed run starts a new training episode there.)"""
    cli.main(["train", *RESUMABLE, "--steps", "600", "--out", str(tmp_path / "whole")])
    cli.main(["train", *RESUMABLE, "--steps", "400", "--out", str(tmp_path / "parts")])
    metrics = json.loads((tmp_path / "parts" / "metrics.json").read_text())  # killed after logging a row it never saved
    metrics["evaluations"].append({**metrics["evaluations"][-1], "env_steps": 500})
    (tmp_path / "parts" / "metrics.json").write_text(json.dumps(metrics))
    assert cli.main(["train", *RESUMABLE, "--steps", "600", "--resume", "--out", str(tmp_path / "parts")]) == 0
    whole, parts = _rows(tmp_path / "whole"), _rows(tmp_path / "parts")
    assert [row["env_steps"] for row in parts] == [0, 200, 400, 600]
    assert parts[:3] == whole[:3]
    counters = ("env_steps", "fits", "sac_updates")
    assert {k: parts[3][k] for k in counters} == {k: whole[3][k] for k in counters} == \
        {"env_steps": 600, "fits": 2, "sac_updates": 401}
    assert parts[3]["train_episodes"] >= whole[2]["train_episodes"] + 3
    assert parts[3]["train_cost_total"] >= parts[2]["train_cost_total"]
    assert parts[3]["train_crashes"] == 0  # saved and restored (the toy never terminates): not None, unknown


def test_a_resume_restores_the_learner_and_its_replay_exactly(tmp_path):
    from loop_ros.core.run_checkpoint import RESUME_FILE, resume_run, save_run

    saved = LoopTrainer(PointMassTask(), algo="loop", seed=1, schedule=TrainerConfig(seed_steps=10), **TINY)
    feed(saved, 60, np.random.default_rng(0))
    save_run(tmp_path / RESUME_FILE, saved, {"identity": {"seed": 1}, "step": 60})
    restored = LoopTrainer(PointMassTask(), algo="loop", seed=2, schedule=TrainerConfig(seed_steps=10), **TINY)
    assert resume_run(tmp_path / RESUME_FILE, restored, {"seed": 1})["step"] == 60
    assert (restored.steps, len(restored.buffer), restored.buffer.position) == (60, 60, 60)
    for key, values in saved.buffer.arrays().items():
        np.testing.assert_array_equal(restored.buffer.arrays()[key], values)
    state = np.asarray([0.3, -0.2, 0.1, 0.0], np.float32)
    saved.end_episode()  # the restored planner starts without a warm start
    assert np.array_equal(saved.act(state, np.random.default_rng(5)), restored.act(state, np.random.default_rng(5)))


def test_a_resume_of_another_run_or_a_damaged_file_is_refused_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    cli.main(["train", *RESUMABLE, "--steps", "200", "--out", str(out)])
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    assert cli.main(["train", *RESUMABLE, "--steps", "400", "--seed", "4", "--resume", "--out", str(out)]) == 2
    assert "is of another run: its seed differ" in capsys.readouterr().err
    (out / "resume.pt").write_bytes(before["resume.pt"][:1000])
    assert cli.main(["train", *RESUMABLE, "--steps", "400", "--resume", "--out", str(out)]) == 2
    assert "resume.pt cannot be read" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file() and path.name != "resume.pt"} == \
        {name: data for name, data in before.items() if name != "resume.pt"}

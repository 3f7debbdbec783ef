"""Smoke runs of ``loop-ros train`` on the gymnasium MuJoCo tasks (``gym:<EnvId>``): 100 steps with
tiny networks and plans, so that each run takes seconds. They check that training, evaluation and
the bundle export work end to end for every env and every algorithm, not that anything is learned.

To keep the time low the runs are not the full product of envs and algorithms (5 x 4 = 20): every
env id of ``KNOWN_ENVS`` runs once with ``loop``, and every other algorithm of ``ALGOS`` runs once on
``SMOKE_ENV``: 5 + 3 = 8 runs. Then ``loop-ros eval`` runs the ``loop`` bundle of ``SMOKE_ENV``.
"""
from __future__ import annotations

import csv
import json

import pytest

from loop_ros import cli
from loop_ros.core.tasks.gym_mujoco import KNOWN_ENVS
from loop_ros.core.config import ALGOS

SMOKE_ENV = "Hopper-v5"
STEPS, SEED_STEPS = 100, 50
TINY = [
    "--steps", str(STEPS), "--seed-steps", str(SEED_STEPS), "--eval-every", str(STEPS), "--eval-episodes", "1",
    "--episode-steps", "30", "--threads", "1", "--fit-max-seconds", "5", "--no-progress",
    "--set", "ensemble.hidden=[16,16]", "--set", "ensemble.ensemble_size=2", "--set", "ensemble.num_elites=2",
    "--set", "ensemble.batch_size=16", "--set", "ensemble.max_epochs=5",
    "--set", "sac.hidden=[16,16]", "--set", "sac.batch_size=16",
    "--set", "arc.population=8", "--set", "arc.particles=1", "--set", "arc.iterations=1", "--set", "arc.n_elites=4",
]
RUNS = ([(env_id, "loop") for env_id in sorted(KNOWN_ENVS)]
        + [(SMOKE_ENV, algo) for algo in sorted(ALGOS) if algo != "loop"])


def test_runs_cover_every_env_and_every_algo():
    assert {env_id for env_id, _ in RUNS} == set(KNOWN_ENVS)
    assert {algo for _, algo in RUNS} == set(ALGOS)
    assert len(RUNS) == len(KNOWN_ENVS) + len(ALGOS) - 1


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gym_train_smoke")


@pytest.mark.parametrize("env_id, algo", RUNS, ids=[f"{env_id}-{algo}" for env_id, algo in RUNS])
def test_train_smoke(runs_dir, env_id, algo, capsys):
    out = runs_dir / f"{env_id}-{algo}"
    assert cli.main(["train", "--task", f"gym:{env_id}", "--algo", algo, "--out", str(out), *TINY]) == 0
    last = json.loads(capsys.readouterr().out)
    assert last["env_steps"] == STEPS

    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["task"] == f"gym:{env_id}"
    assert (manifest["obs_dim"], manifest["act_dim"]) == (KNOWN_ENVS[env_id].obs_dim, KNOWN_ENVS[env_id].act_dim)
    assert manifest["provenance"]["algo"] == algo and manifest["provenance"]["steps"] == STEPS
    with open(out / "metrics.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["env_steps"]) for row in rows] == [0, STEPS]  # at the start and at the end
    assert all(row["eval_return"] for row in rows)
    if algo != "sac":  # the model is fitted once the seeding phase is over
        assert int(rows[-1]["fits"]) >= 1


def test_eval_of_a_trained_bundle(runs_dir, capsys):
    bundle = runs_dir / f"{SMOKE_ENV}-loop" / "bundle"
    if not (bundle / "manifest.json").exists():
        pytest.skip(f"the {SMOKE_ENV} loop run did not write its bundle (see its test)")
    assert cli.main(["eval", "--task", f"gym:{SMOKE_ENV}", "--bundle", str(bundle), "--episodes", "1",
                     "--episode-steps", "20"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert isinstance(summary["mean_return"], float)

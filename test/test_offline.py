"""`loop-ros offline`: a bundle learned from a bag alone, deterministic for a seed, verified, naming
its datasets; and the params file that deploys it with offline ARC."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loop_ros import cli
from loop_ros.core.bundle import read_bundle
from loop_ros.core.bundle_verify import verify_bundle
from loop_ros.core.datasets import bag_directories, bags_sha256
from loop_ros.core.episodes import evaluate_bundle
from loop_ros.core.params_file import load_params_file
from loop_ros.core.tasks import make_task

TASK = make_task("point_mass")
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "rc_car"
TINY = ["--set", "ensemble.hidden=[16]", "--set", "ensemble.ensemble_size=2", "--set", "ensemble.num_elites=2",
        "--set", "ensemble.max_epochs=3", "--set", "crr.hidden=[16]", "--set", "crr.batch_size=32",
        "--steps", "40", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "random"
    assert cli.main(["dataset", "--task", "point_mass", "--steps", "200", "--out", str(out)]) == 0
    return out


def offline(dataset, out, *extra) -> dict:
    assert cli.main(["offline", "--task", "point_mass", "--data", str(dataset), "--out", str(out), *TINY, *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_a_bundle_learned_offline_is_deterministic_verified_and_names_its_dataset(dataset, tmp_path):
    first = offline(dataset, tmp_path / "a", "--seed", "3")
    again = offline(dataset, tmp_path / "b", "--seed", "3")
    offline(dataset, tmp_path / "c", "--seed", "4")
    bundles = [read_bundle(tmp_path / name / "bundle") for name in "abc"]
    for bundle in bundles:
        verify_bundle(bundle, expected=TASK.describe())
    files = [bundle.manifest["sha256"] for bundle in bundles]
    assert files[0] == files[1] and files[0] != files[2]
    assert first["losses"] == again["losses"] and first["fit"]["elite_holdout_mse"] == again["fit"]["elite_holdout_mse"]
    provenance = bundles[0].manifest["provenance"]
    (source,) = provenance["datasets"]
    assert source["sha256"] == bags_sha256(bag_directories(dataset)) and source["transitions"] == 200
    assert provenance["learner"] == "crr" and provenance["learner_steps"] == 40 == first["learner_steps"]
    assert "loop-ros offline" in provenance["command"] and str(dataset) in provenance["command"]


def test_the_params_file_deploys_the_bundle_with_offline_arc(dataset, tmp_path):
    report = offline(dataset, tmp_path, "--set", "arc.beta_pess=2", "--eval-episodes", "1")
    params = load_params_file(str(tmp_path / "params.yaml"))
    assert (params["arc.beta"], params["arc.iterations"], params["arc.beta_pess"]) == (1.0, 1, 2.0)  # --set wins
    assert isinstance(params["arc.beta_pess"], float)  # as declared: rcl refuses an integer for a double
    assert params["task.bundle"] == str((tmp_path / "bundle").resolve())
    assert not any(key.startswith("crr.") for key in params)  # the learner's settings stay in the provenance
    result = evaluate_bundle(TASK, "arc", params["task.bundle"], 1, params)
    assert result["settings"]["arc"]["beta"] == 1.0 and result["mean_return"] == report["eval"]["loop"]["mean_return"]
    assert report["eval"]["actor"]["controller"] == "actor"


@pytest.mark.parametrize("policy", ["actor", "planner"])
def test_a_bundles_policy_records_a_dataset_and_another_tasks_bundle_is_refused(dataset, tmp_path, policy, capsys):
    offline(dataset, tmp_path / "run")
    out = tmp_path / policy
    assert cli.main(["dataset", "--task", "point_mass", "--policy", policy, "--bundle", str(tmp_path / "run" / "bundle"),
                     "--steps", "60", "--out", str(out)]) == 0
    assert json.loads((out / "dataset.json").read_text())["policy"] == policy
    assert cli.main(["dataset", "--task", "point_mass", "--policy", policy, "--bundle", str(SHIPPED),
                     "--steps", "10", "--out", str(tmp_path / "wrong")]) == 2
    assert "loop-ros dataset: " in capsys.readouterr().err

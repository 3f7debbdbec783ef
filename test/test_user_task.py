"""A task from the user's own package, with no edit of loop_ros: ``examples/my_robot_tasks`` (README,
"Your own task") is built in a temporary directory, installed with pip, found through its
``loop_ros.tasks`` entry point, and run through ``loop-ros train`` and the ROS loop (``loop-ros up``).

The package is installed into a temporary target directory on PYTHONPATH (pip's ``--target``), not
into the venv itself, so a killed test leaves the venv as it was; the entry point is found the same way.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ros_helpers import REPO, domain_id, ros_environment

EXAMPLE = REPO / "examples" / "my_robot_tasks"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """PYTHONPATH entry holding the installed example package."""
    tmp = tmp_path_factory.mktemp("user_task")
    source = tmp / "src"
    shutil.copytree(EXAMPLE, source)
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, timeout=300)
    return target


def _env(installed: Path, domain: int | None = None) -> dict[str, str]:
    env = ros_environment(domain) if domain is not None else dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(installed), env.get("PYTHONPATH", "")) if p)
    return env


def _loop_ros(installed: Path, *args: str, domain: int | None = None, timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "loop_ros.cli", *args], env=_env(installed, domain),
                          capture_output=True, text=True, timeout=timeout, cwd=installed.parent)


def test_train_and_eval_run_the_users_task(installed, tmp_path):
    out = tmp_path / "run"
    result = _loop_ros(installed, "train", "--task", "reacher", "--algo", "loop", "--steps", "300", "--out", str(out),
                       "--seed-steps", "200", "--eval-every", "300", "--eval-episodes", "1", "--no-progress",
                       "--set", "ensemble.max_epochs=5")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert (manifest["task"], manifest["obs_dim"], manifest["act_dim"]) == ("reacher", 4, 2)
    result = _loop_ros(installed, "eval", "--task", "reacher", "--bundle", str(out / "bundle"), "--episodes", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["mean_return"] < 0.0


def test_the_ros_loop_runs_the_users_task_and_swaps_learned_models_in(installed, tmp_path):
    domain = domain_id(41)
    summary_path = tmp_path / "summary.json"
    result = _loop_ros(installed, "up", "reacher", "--fresh", "--duration", "30", "--domain-id", str(domain),
                       "--json", str(summary_path), domain=domain, timeout=150)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    shutil.rmtree(summary["fresh_data_dir"], ignore_errors=True)
    assert summary["task"] == "reacher"
    assert summary["exit_codes"] == {"trainer": 0, "sim": 0, "planner": 0}
    assert summary["model_swaps"] >= 1 and summary["swaps_rejected"] == 0
    assert summary["replay_transitions"] >= 200


def test_an_unknown_task_is_a_usage_error_naming_the_ways_to_give_one(installed):
    result = _loop_ros(installed, "train", "--task", "no_such_task", "--steps", "10", "--out", "x")
    assert result.returncode == 2
    assert "unknown task 'no_such_task'" in result.stderr and "reacher" in result.stderr

"""A fleet on one trainer: ``loop-ros up rc_car --robots 2 --fresh`` runs two sims and two planners
in their own namespaces and one trainer that records both streams into one replay and publishes
every model to both planners."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from ros_helpers import domain_id, params_file, ros_environment
from test_ros_trainer import SMALL_NETS

from loop_ros.core.config import TrainerConfig
from loop_ros.core.replay import ReplayBuffer, bag_directories
from loop_ros.core.tasks import make_task
from loop_ros.core.transitions import ReplayTopics

ROBOTS = ("robot0", "robot1")


def test_two_robots_learn_on_one_trainer(tmp_path):
    params = params_file(tmp_path / "params.yaml", **SMALL_NETS)
    domain = domain_id(41)
    command = [sys.executable, "-m", "loop_ros.cli", "up", "rc_car", "--robots", "2", "--fresh", "--duration", "20",
               "--params", str(params), "--domain-id", str(domain), "--json", str(tmp_path / "summary.json")]
    with open(tmp_path / "up.log", "wb") as log:
        process = subprocess.Popen(command, env=ros_environment(domain), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        assert process.wait(timeout=90) == 0, (tmp_path / "up.log").read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["exit_codes"] == {"trainer": 0, **{f"{r}/{n}": 0 for r in ROBOTS for n in ("sim", "planner")}}
    published = summary["model_versions_published"]
    assert published, "the trainer published no model"
    steps = 0
    for robot in ROBOTS:
        figures, sim = summary["robots"][robot], summary["nodes"][f"{robot}/sim"]
        assert figures["ticks"] > 0 and sim["steps"] > 0
        assert figures["model_swaps"] >= 1 and figures["model_version"] in published and figures["swaps_rejected"] == 0
        steps += sim["steps"]
    # one replay holds both streams, each robot's transitions apart (states completing none are counted)
    assert summary["replay_transitions"] >= 0.8 * steps, (steps, summary["replay_unpaired"], summary["robots"])
    fresh = Path(summary["fresh_data_dir"])
    [bag] = bag_directories(fresh, print)
    task = make_task("rc_car")
    streams = [ReplayTopics.for_task(task, f"/{r}/state", f"/{r}/action", f"/{r}/episode") for r in ROBOTS]
    reloaded = ReplayBuffer(TrainerConfig(data_dir=str(fresh)), task, streams, print)
    assert sum(1 for _ in reloaded.load()) == summary["replay_transitions"]
    shutil.rmtree(fresh)

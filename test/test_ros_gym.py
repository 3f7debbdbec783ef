"""A gymnasium task in the ROS loop: ``loop-ros up gym:InvertedPendulum-v5 --fresh`` with real
processes on localhost, in lock-step (simulated time). The sim steps the gymnasium env and publishes
array states that carry the step into them (``core.array_state``: action, reward, count, fall); the
trainer learns the reward head from them, tells a fall (done) from the time limit, and swaps its
models into the planner.

InvertedPendulum falls within a few steps under a poor controller, so the run holds many
terminated episodes: each must become exactly one terminal transition, and the recorded rewards
of an episode must add up to the return the sim reports for it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from ros_helpers import REPO, domain_id, params_file, ros_environment

from loop_ros.core.config import TrainerConfig
from loop_ros.core.replay import ReplayBuffer
from loop_ros.core.tasks import make_task
from loop_ros.core.transitions import ReplayTopics

TASK = "gym:InvertedPendulum-v5"
RUN_S = 25
SMALL = {
    "ensemble.hidden": [32, 32], "ensemble.ensemble_size": 3, "ensemble.num_elites": 2, "ensemble.max_epochs": 5,
    "ensemble.update_every": 100, "ensemble.batch_size": 64, "sac.hidden": [16, 16], "sac.batch_size": 32,
    "arc.population": 50, "arc.particles": 2, "arc.iterations": 2, "trainer.seed_steps": 100,
    "trainer.refits_per_publish": 1, "sim.episode_steps": 200, "task.control_rate_hz": 50.0,
    "task.state_timeout_s": 0.1, "sim.action_timeout_s": 0.1,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gym_loop")
    params = params_file(tmp / "params.yaml", base=REPO / "config" / "gym_mujoco.yaml", **SMALL)
    domain = domain_id(40)
    # on simulated time: the lock-step sim's /clock drives the nodes' clocks (their timers stay on the steady clock)
    command = [sys.executable, "-m", "loop_ros.cli", "up", TASK, "--fresh", "--duration", str(RUN_S), "--use-sim-time",
               "--params", str(params), "--domain-id", str(domain), "--json", str(tmp / "summary.json")]
    with open(tmp / "up.log", "wb") as log:
        process = subprocess.Popen(command, env=ros_environment(domain), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        code = process.wait(timeout=RUN_S + 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0, (tmp / "up.log").read_text(errors="replace")[-3000:]
    summary = json.loads((tmp / "summary.json").read_text())
    yield summary
    shutil.rmtree(summary["fresh_data_dir"], ignore_errors=True)


def test_the_gym_loop_runs_in_lock_step_and_swaps_learned_models_in(run):
    assert run["task"] == TASK and run["nodes"]["sim"]["lockstep"] is True  # config/gym_mujoco.yaml's default
    # Lock-step: the sim steps only on the planner's answer to its latest state, so there is no
    # deadline to miss; each step is one transition, recorded from the state message alone.
    sim_steps = run["nodes"]["sim"]["steps"]
    assert run["deadline_misses"] == 0 and run["ticks"] > 0 and run["nodes"]["sim"]["republished_states"] == 0
    assert abs(run["replay_transitions"] - sim_steps) <= 1
    assert run["exit_codes"] == {"trainer": 0, "sim": 0, "planner": 0}
    assert run["model_swaps"] >= 1 and run["swaps_rejected"] == 0
    assert run["model_version"] in run["model_versions_published"]
    assert run["nodes"]["planner"]["callback_errors"] == {} and run["nodes"]["trainer"]["callback_errors"] == {}


def test_every_fall_is_one_terminal_transition_and_time_limits_are_not(run):
    episodes = run["nodes"]["sim"]["episodes"]
    falls = sum(e["terminated"] for e in episodes)
    assert falls >= 5, "the run should hold many falls"
    # The last episode record may still have been on its way when the trainer stopped.
    assert falls - 1 <= run["nodes"]["trainer"]["replay_terminal_transitions"] <= falls


def test_recorded_rewards_add_up_to_the_sims_returns(run):
    """The trainer's replay, reloaded from its bags: the transitions of each complete episode carry
    the sim's rewards (the reward head learns from them), and each fall ends one with done."""
    task = make_task(TASK)
    data_dir = run["fresh_data_dir"]
    buffer = ReplayBuffer(TrainerConfig(data_dir=data_dir), task, ReplayTopics.for_task(task), print)
    transitions = list(buffer.load())
    assert len(transitions) == run["replay_transitions"]
    ends = [i for i, t in enumerate(transitions) if t.done]
    assert len(ends) == run["nodes"]["trainer"]["replay_terminal_transitions"]
    # Between two falls lie the rest of one episode's transitions or, after a time limit (no done),
    # those of several: the sim's returns summed the same way, over the episodes up to each fall.
    groups, total = [], 0.0
    for episode in run["nodes"]["sim"]["episodes"]:
        total += episode["return"]
        if episode["terminated"]:
            groups, total = groups + [total], 0.0
    recorded = [sum(t.r for t in transitions[a + 1:b + 1]) for a, b in zip(ends, ends[1:])]
    assert len(recorded) >= 4
    # The trainer's first fall is the sim's first or second (the first step may predate the trainer).
    best = max(sum(abs(r - g) < 1e-6 for r, g in zip(recorded, groups[offset + 1:])) for offset in range(2))
    assert best >= len(recorded) - 1, (recorded[:5], groups[:6])

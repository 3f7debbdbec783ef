"""``loop-ros bench loop``: sim in the loop under the trainer's load, reduced to the real-time figures."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from ros_helpers import domain_id, export_test_bundle, params_file, ros_environment

from loop_ros.workers.tick_policy import tick_jitter

RUN_S = 14.0
RATE_HZ = 50.0


def test_tick_jitter_is_each_periods_distance_from_the_nominal_one():
    periods = [0.020, 0.0235, 0.0171, 0.020]
    expected = [abs(p - 0.020) for p in periods]
    np.testing.assert_allclose(tick_jitter(periods, 0.020), expected, atol=1e-12)


def test_bench_loop_runs_the_task_under_the_trainers_load_and_leaves_the_replay_alone(tmp_path: Path):
    user_replay = tmp_path / "user_replay"
    params = params_file(tmp_path / "params.yaml", **{"task.bundle": str(export_test_bundle(tmp_path / "bundle")),
                                                      "trainer.data_dir": str(user_replay)})
    domain, result_file = domain_id(13), tmp_path / "loop.json"
    command = [sys.executable, "-m", "loop_ros.cli", "bench", "loop", "--duration", str(RUN_S), "--params", str(params),
               "--domain-id", str(domain), "--json", str(result_file)]
    with open(tmp_path / "bench.log", "wb") as log:
        process = subprocess.Popen(command, env=ros_environment(domain), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            assert process.wait(timeout=RUN_S + 120) == 0, (tmp_path / "bench.log").read_text()[-3000:]
        finally:
            if process.poll() is None:  # hung: stop it (and through it, its nodes) by PID
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    result = json.loads(result_file.read_text())
    assert result["clean_exit"] and result["stopped_because"] == "duration reached", \
        (result["exit_codes"], result["stopped_because"], (tmp_path / "bench.log").read_text()[:3000])
    assert result["target_hz"] == RATE_HZ and abs(result["achieved_hz"] - RATE_HZ) <= 0.05 * RATE_HZ
    assert sum(result["ticks_by_source"].values()) == result["ticks"] >= 0.5 * RUN_S * RATE_HZ
    assert result["deadline_misses"] == result["ticks_by_source"]["late"] + result["ticks_by_source"]["actor"]
    assert 0.0 <= result["tick_jitter_p99_ms"] <= result["tick_period_max_ms"]
    # the load: the trainer recorded and learned, on a share of the machine it reports
    assert result["trainer"]["transitions"] > 0 and result["trainer"]["sac_updates"] > 0
    assert set(result["cpu_share"]) == {"trainer", "sim", "planner"}
    assert all(0.0 < share <= 1.0 for share in result["cpu_share"].values())
    # the trainer recorded into a temporary data_dir, not the params file's
    assert not user_replay.exists()

"""``loop-ros bench learn``: the grid runs what is not done, a few at a time, and sums up over seeds."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from loop_ros import cli
from loop_ros.bench.curves import SIZE, plot_curves
from loop_ros.bench.learn import LearnRun, curves, is_done, run_grid, summary_table, train_command, training_cost_curves


def fake_training(directory, returns: dict[int, float], exit_code: int = 0, seconds: float = 0.0,
                  metric: str = "eval_return") -> list[str]:
    """A command that writes what a finished ``loop-ros train`` leaves (unless it fails), ``returns``
    as the rows' ``metric``, and notes when it ran in ``directory.parent/ran.log``."""
    script = f"""
import json, os, pathlib, sys, time
d = pathlib.Path({str(directory)!r})
with open(d.parent / "ran.log", "a") as log:
    log.write(f"start {{d.name}} {{time.monotonic()}}\\n")
time.sleep({seconds})
rows = [{{"env_steps": s, {metric!r}: r}} for s, r in {sorted(returns.items())!r}]
(d / "metrics.json").write_text(json.dumps({{"evaluations": rows}}))
with open(d.parent / "ran.log", "a") as log:
    log.write(f"end {{d.name}} {{time.monotonic()}}\\n")
if {exit_code}:
    sys.exit({exit_code})
(d / "bundle").mkdir()
(d / "bundle" / "manifest.json").write_text("{{}}")
"""
    return [sys.executable, "-c", script]


def test_the_grid_runs_what_is_not_done_a_few_at_a_time_and_a_rerun_skips_finished_runs(tmp_path):
    runs = [LearnRun("gym:Toy-v0", "loop", seed) for seed in range(3)]
    commands = {run: fake_training(run.directory(tmp_path), {0: 1.0}, exit_code=3 if run.seed == 2 else 0, seconds=0.3)
                for run in runs}
    codes = run_grid(runs, tmp_path, commands, jobs=2, log=lambda text: None)
    assert [codes[run] for run in runs] == [0, 0, 3]
    assert [is_done(run.directory(tmp_path)) for run in runs] == [True, True, False]
    events = [line.split() for line in (runs[0].directory(tmp_path).parent / "ran.log").read_text().splitlines()]
    running, most = 0, 0
    for kind, _, _ in sorted(events, key=lambda event: float(event[2])):
        running += 1 if kind == "start" else -1
        most = max(most, running)
    assert most == 2  # never three at once
    commands[runs[2]] = fake_training(runs[2].directory(tmp_path), {0: 1.0})
    codes = run_grid(runs, tmp_path, commands, jobs=2, log=lambda text: None)
    assert codes == {run: 0 for run in runs}
    assert len((runs[0].directory(tmp_path).parent / "ran.log").read_text().splitlines()) == 2 * (3 + 1)  # only seed 2 again


def test_a_rerun_with_more_steps_takes_the_finished_runs_on(tmp_path):
    runs = [LearnRun("gym:Toy-v0", "loop", seed) for seed in range(2)]
    commands = {run: fake_training(run.directory(tmp_path), {0: 1.0, 100: 2.0}) for run in runs}
    assert run_grid(runs, tmp_path, commands, jobs=2, log=lambda text: None, steps=100) == {run: 0 for run in runs}
    ran = runs[0].directory(tmp_path).parent / "ran.log"
    assert len(ran.read_text().splitlines()) == 2 * 2
    assert all(is_done(run.directory(tmp_path), 100) and not is_done(run.directory(tmp_path), 200) for run in runs)
    run_grid(runs, tmp_path, commands, jobs=2, log=lambda text: None, steps=100)
    assert len(ran.read_text().splitlines()) == 2 * 2  # done at 100 steps: nothing ran again
    run_grid(runs, tmp_path, commands, jobs=2, log=lambda text: None, steps=200)
    assert len(ran.read_text().splitlines()) == 2 * 4  # both run again, for more steps


def test_curves_are_the_mean_and_std_over_seeds_at_the_steps_every_seed_has(tmp_path):
    returns = {0: {0: 1.0, 100: 10.0, 200: 30.0}, 1: {0: 3.0, 100: 20.0}, 2: {0: 2.0, 100: 60.0, 200: 50.0}}
    runs = [LearnRun("point_mass", "sac", seed) for seed in returns]
    commands = {run: fake_training(run.directory(tmp_path), returns[run.seed]) for run in runs}
    unfinished = LearnRun("point_mass", "sac", 3)  # no bundle: left out
    unfinished.directory(tmp_path).mkdir(parents=True)
    run_grid(runs, tmp_path, commands, jobs=3, log=lambda text: None)
    curve = curves(runs + [unfinished], tmp_path)["point_mass"]["sac"]
    assert curve["env_steps"] == [0, 100] and curve["seeds"] == 3
    np.testing.assert_allclose(curve["mean"], [2.0, 30.0])
    np.testing.assert_allclose(curve["std"], [np.sqrt(2 / 3), np.sqrt(((10 - 30) ** 2 + (20 - 30) ** 2 + 30 ** 2) / 3)])
    assert "| point_mass | sac | 3 | 100 | 30.0 +- 21.6 |" in summary_table(curves(runs, tmp_path))
    assert curves(runs, tmp_path, "actor_divergence") == {}  # a metric no run has


def test_training_cost_curves_leave_out_tasks_whose_training_had_no_cost(tmp_path):
    totals = {("rc_car", 0): {0: 0.0, 100: 40.0}, ("rc_car", 1): {0: 0.0, 100: 60.0},
              ("gym:Hopper-v5", 0): {0: 0.0, 100: 0.0}}
    runs = [LearnRun(task, "loop", seed) for task, seed in totals]
    commands = {run: fake_training(run.directory(tmp_path), totals[run.task, run.seed], metric="train_cost_total")
                for run in runs}
    run_grid(runs, tmp_path, commands, jobs=3, log=lambda text: None)
    table = training_cost_curves(runs, tmp_path)
    assert list(table) == ["rc_car"]
    np.testing.assert_allclose(table["rc_car"]["loop"]["mean"], [0.0, 50.0])
    np.testing.assert_allclose(table["rc_car"]["loop"]["std"], [0.0, 10.0])


def test_learning_curves_are_drawn_into_a_png(tmp_path):
    path = tmp_path / "curves.png"
    plot_curves({"loop": {"env_steps": [0, 100], "mean": [0.0, 5.0], "std": [0.0, 1.0], "seeds": 3},
                 "sac": {"env_steps": [100], "mean": [2.0], "std": [0.0], "seeds": 1}}, "toy", path)
    with Image.open(path) as image:
        assert image.size == SIZE and len(image.getcolors(maxcolors=1 << 16)) > 3  # more than the frame and the text


def test_bench_learn_trains_each_run_and_writes_the_summary(tmp_path, capsys):
    out = tmp_path / "grid"
    options = ["bench", "learn", "--task", "point_mass", "--algo", "sac", "--seeds", "0", "1", "--steps", "40",
               "--eval-every", "20", "--eval-episodes", "1", "--out", str(out),
               "--set", "sac.hidden=[16,16]", "--set", "sac.batch_size=16", "--set", "trainer.seed_steps=10"]
    assert cli.main(options) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == [] and summary["curves"]["point_mass"]["sac"]["env_steps"][-1] == 40
    assert summary["curves"]["point_mass"]["sac"]["seeds"] == 2
    assert (out / "curves_point_mass.png").exists() and (out / "divergence_point_mass.png").exists()
    assert summary["actor_divergence"]["point_mass"]["sac"]["env_steps"] == [20, 40]  # none while seeding
    assert "| point_mass | sac | 2 | 40 |" in capsys.readouterr().out
    settings = json.loads((out / "runs" / "point_mass" / "sac" / "seed1" / "metrics.json").read_text())["settings"]
    assert settings["sac"]["hidden"] == [16, 16]  # the --set reached the run


def test_a_terminated_grid_stops_the_runs_it_started(tmp_path):
    """SIGTERM to the grid (as `bench learn` handles it) terminates its runs before it exits."""
    pid_file = tmp_path / "run.pid"
    run_script = f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(120)"
    grid_script = f"""
import signal, sys
from pathlib import Path
from loop_ros.bench.learn import LearnRun, run_grid
from loop_ros.commands.bench import _interrupt
signal.signal(signal.SIGTERM, _interrupt)
run = LearnRun("point_mass", "sac", 0)
try:
    run_grid([run], Path({str(tmp_path)!r}), {{run: [sys.executable, "-c", {run_script!r}]}}, jobs=1, log=lambda text: None)
except KeyboardInterrupt:
    sys.exit(3)
"""
    grid = subprocess.Popen([sys.executable, "-c", grid_script])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        run_pid = int(pid_file.read_text())
        grid.send_signal(signal.SIGTERM)
        assert grid.wait(timeout=30) == 3
        with pytest.raises(ProcessLookupError):
            os.kill(run_pid, 0)  # gone (reaped by the grid)
    finally:
        if grid.poll() is None:
            grid.kill()
            grid.wait()
        if pid_file.exists():  # whatever happened, the stand-in run does not outlive the test
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_an_unfinished_run_goes_on_from_what_it_saved_and_one_that_saved_nothing_starts_over(tmp_path):
    saved, unsaved = LearnRun("gym:Toy-v0", "loop", 0), LearnRun("gym:Toy-v0", "loop", 1)
    for run in (saved, unsaved):
        run.directory(tmp_path).mkdir(parents=True)
        (run.directory(tmp_path) / "checkpoint_500").mkdir()  # what the earlier try left
    (saved.directory(tmp_path) / "resume.pt").write_bytes(b"saved")
    commands = {run: fake_training(run.directory(tmp_path), {0: 1.0}) for run in (saved, unsaved)}
    assert run_grid([saved, unsaved], tmp_path, commands, jobs=1, log=lambda text: None) == {saved: 0, unsaved: 0}
    assert (saved.directory(tmp_path) / "resume.pt").read_bytes() == b"saved"
    assert (saved.directory(tmp_path) / "checkpoint_500").is_dir()
    assert not (unsaved.directory(tmp_path) / "checkpoint_500").exists()
    assert "--resume" in train_command(saved, tmp_path, 1000, 500, 1, 1, [])

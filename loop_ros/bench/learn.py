"""``loop-ros bench learn``: a grid of headless trainings (task x algo x seed), a few at a time, resumable.

Each run is ``loop-ros train`` in its own process, in ``DIR/runs/<task>/<algo>/seed<k>/`` with its
log (``train.log``) beside its metrics. A run whose final bundle is there is done and skipped, so
an interrupted grid goes on where it stopped (and a finished one, given more ``--steps``); an
unfinished run goes on from its last evaluation
(``loop-ros train --resume``), or starts over when it had none. Then the summary:
per task and algo, the evaluation return at each step count as mean and std over the seeds
(``DIR/summary.json``, the table ``DIR/summary.md``) and a PNG of the learning curves per task
(``DIR/curves_<task>.png``, ``bench.curves``); likewise the actor divergence of the training steps
(the paper's Fig. 4: how far the executed actions stray from the actor's; ``DIR/divergence_<task>.png``),
and, for tasks whose training steps had a cost, the cumulative cost of training (the paper's Fig. 6:
violations during training; ``DIR/training_cost_<task>.png``).
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loop_ros.core.tasks import task_file_name

TRAIN_ENV = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000"}
"""What ``commands/train.py`` asks its launcher for (glibc keeps the replay's arrays mapped)."""
STOP_S = 30.0
"""How long an interrupted grid waits for a run it terminated before it kills it."""


@dataclass(frozen=True)
class LearnRun:
    """One training of the grid."""

    task: str
    algo: str
    seed: int

    def directory(self, out: Path) -> Path:
        return out / "runs" / task_file_name(self.task) / self.algo / f"seed{self.seed}"


def is_done(directory: Path, steps: int = 0) -> bool:
    """A finished ``loop-ros train`` run (it exports its final bundle last) that evaluated at ``steps``
    or later: a grid rerun with more ``--steps`` takes its finished runs on from their last evaluation."""
    finished = (directory / "bundle" / "manifest.json").exists()
    return finished and (steps <= 0 or max(_evaluations(directory, "eval_return"), default=0) >= steps)


def train_command(run: LearnRun, out: Path, steps: int, eval_every: int, eval_episodes: int,
                  threads: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "loop_ros.cli", "train", "--task", run.task, "--algo", run.algo,
            "--seed", str(run.seed), "--steps", str(steps), "--out", str(run.directory(out)),
            "--eval-every", str(eval_every), "--eval-episodes", str(eval_episodes), "--threads", str(threads),
            "--no-progress", "--resume", *extra]


def run_grid(runs: list[LearnRun], out: Path, commands: dict[LearnRun, list[str]], jobs: int,
             log=print, steps: int = 0) -> dict[LearnRun, int]:
    """Run every command not done yet (at ``steps``), ``jobs`` at a time; returns each run's exit code
    (0: done before)."""
    codes = {run: 0 for run in runs if is_done(run.directory(out), steps)}
    waiting = [run for run in runs if run not in codes]
    going: dict[LearnRun, tuple[subprocess.Popen, float]] = {}
    try:
        while waiting or going:
            while waiting and len(going) < jobs:
                run = waiting.pop(0)
                going[run] = (_start(commands[run], run.directory(out)), time.monotonic())
                log(f"started {run.task} {run.algo} seed {run.seed}")
            time.sleep(0.5)
            for run, (process, started) in list(going.items()):
                if process.poll() is not None:
                    codes[run] = process.returncode
                    del going[run]
                    log(f"finished {run.task} {run.algo} seed {run.seed}: exit {process.returncode}, "
                        f"{time.monotonic() - started:.0f} s")
    finally:
        for process, _ in going.values():  # interrupted: the runs in progress stop with us
            process.terminate()
        for process, _ in going.values():
            try:
                process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return codes


def _start(command: list[str], directory: Path) -> subprocess.Popen:
    from loop_ros.core.run_checkpoint import RESUME_FILE

    if not (directory / RESUME_FILE).exists():  # an earlier try that saved nothing: its rows would mix with ours
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "train.log", "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **TRAIN_ENV})


def curves(runs: list[LearnRun], out: Path, metric: str = "eval_return") -> dict[str, dict[str, dict]]:
    """``{task: {algo: {"env_steps", "mean", "std", "seeds"}}}`` over the seeds' evaluations at
    the step counts every finished seed has."""
    table: dict[str, dict[str, dict]] = {}
    for (task, algo), group in itertools.groupby(sorted(runs, key=lambda r: (r.task, r.algo)),
                                                 key=lambda r: (r.task, r.algo)):
        rows = [_evaluations(run.directory(out), metric) for run in group if is_done(run.directory(out))]
        steps = sorted(set.intersection(*(set(r) for r in rows))) if rows else []
        if not steps:  # no finished seed, or a metric the algo has not (pets: no actor to diverge from)
            continue
        values = np.array([[r[s] for s in steps] for r in rows], dtype=float)
        table.setdefault(task, {})[algo] = {"env_steps": steps, "mean": values.mean(0).tolist(),
                                            "std": values.std(0).tolist(), "seeds": len(rows)}
    return table


def training_cost_curves(runs: list[LearnRun], out: Path) -> dict[str, dict[str, dict]]:
    """``curves`` of the cumulative cost of the training steps, for the tasks where some training step
    had a cost (a task without a constraint would draw flat zeros)."""
    return {task: algos_curves for task, algos_curves in curves(runs, out, "train_cost_total").items()
            if any(max(curve["mean"]) > 0 for curve in algos_curves.values())}


def _evaluations(directory: Path, metric: str) -> dict[int, float]:
    rows = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))["evaluations"]
    return {int(row["env_steps"]): float(row[metric]) for row in rows if row.get(metric) is not None}


def summary_table(table: dict[str, dict[str, dict]]) -> str:
    """Markdown: per task, each algo's mean +- std at its last common step count."""
    lines = ["| task | algo | seeds | env steps | eval return (mean +- std) |", "|---|---|---|---|---|"]
    for task, algos in table.items():
        for algo, curve in algos.items():
            lines.append(f"| {task} | {algo} | {curve['seeds']} | {curve['env_steps'][-1]} | "
                         f"{curve['mean'][-1]:.1f} +- {curve['std'][-1]:.1f} |")
    return "\n".join(lines) + "\n"


def bench_learn(tasks: list[str], algos: list[str], seeds: list[int], out: Path, steps: int, eval_every: int,
                eval_episodes: int, jobs: int, threads: int, extra: list[str]) -> dict:
    """Run the grid (skipping finished runs), then write and return its summary."""
    from loop_ros.bench.curves import plot_curves

    out.mkdir(parents=True, exist_ok=True)
    runs = [LearnRun(*key) for key in itertools.product(tasks, algos, seeds)]
    commands = {run: train_command(run, out, steps, eval_every, eval_episodes, threads, extra) for run in runs}
    started = time.monotonic()
    codes = run_grid(runs, out, commands, jobs, log=lambda text: print(text, file=sys.stderr, flush=True), steps=steps)
    table, divergence = curves(runs, out), curves(runs, out, "actor_divergence")
    training_cost = training_cost_curves(runs, out)
    summary = {"steps": steps, "seeds": seeds, "jobs": jobs, "threads": threads, "wall_time_s": time.monotonic() - started,
               "failed": [f"{run.task} {run.algo} seed {run.seed}: exit {code}" for run, code in codes.items() if code],
               "commands": {f"{run.task} {run.algo} seed {run.seed}": commands[run] for run in runs},
               "curves": table, "actor_divergence": divergence, "training_cost": training_cost}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(summary_table(table), encoding="utf-8")
    for task, algos_curves in table.items():
        plot_curves(algos_curves, f"{task}: evaluation return, mean +- std over seeds", out / f"curves_{task_file_name(task)}.png")
    for task, algos_curves in divergence.items():
        plot_curves(algos_curves, f"{task}: ||executed action - actor's mean action|| while training, mean +- std "
                                  "over seeds", out / f"divergence_{task_file_name(task)}.png")
    for task, algos_curves in training_cost.items():
        plot_curves(algos_curves, f"{task}: cumulative cost of the training steps (steps violating the constraint), "
                                  "mean +- std over seeds", out / f"training_cost_{task_file_name(task)}.png")
    return summary

"""Train an agent in the task's simulator without ROS: `loop-ros train --task rc_car --algo safe-loop --steps N --out DIR`.

Algorithm 1 of the paper in one process: act (``explore=True``), store, SAC update, refit
the ensemble every K_m steps (``core.trainer.LoopTrainer``); every ``--eval-every`` steps
(and at step 0) run ``--eval-episodes`` evaluation episodes with a fresh evaluation-mode
planner (``explore=False``) over the live networks, with the same statistics as
``loop-ros eval`` (``core.episodes.evaluate_planner``, same episode seeds). Each evaluation
appends a row to ``DIR/metrics.csv`` and rewrites ``DIR/metrics.json``, and exports a
checkpoint bundle ``DIR/checkpoint_<steps>``; the final bundle goes to ``DIR/bundle``. Each
evaluation after the first also saves the run (``DIR/resume.pt``, ``core.run_checkpoint``):
``--resume`` goes on from there (a run killed, or one given more ``--steps``).
The bundle's provenance holds the exact command (every option spelled out), the settings
used, steps, seed, evaluation return and wall time.

Settings: the task's params file (arc, safety, ensemble, sac, trainer sections) or
``--params``, then ``--set section.field=value`` overrides, then the trainer flags
(``--seed-steps`` ...); the provenance records the resulting settings. Runs are
reproducible for a given seed and thread count as long as no ensemble fit hits
``trainer.fit_max_seconds`` (a wall-clock cap: ``fit_seconds`` in the metrics shows how
close fits came; ``--fit-max-seconds 0`` removes it). Launch with
``MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000`` in the environment
(see ``core/trainer.py``).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from loop_ros.core.params_file import section_configs
from loop_ros.settings import add_task_argument, command_line, load_params, positive_int

TRAINER_FLAGS = (
    ("--seed-steps", int, "seed_steps"), ("--updates-per-step", int, "updates_per_step"),
    ("--fit-max-seconds", float, "fit_max_seconds"), ("--threads", int, "torch_threads"),
)
"""Command-line shortcuts for ``trainer`` settings (flag, type, TrainerConfig field)."""
CSV_COLUMNS = (
    "env_steps", "wall_time_s", "eval_return", "eval_cost", "eval_violations", "eval_mean_speed",
    "eval_radius_error", "eval_crashes", "eval_plan_ms", "train_episodes", "train_return", "train_cost",
    "train_cost_total", "train_crashes", "fits", "holdout_mse", "fit_epochs", "fit_seconds", "sac_updates", "alpha",
    "q_mean", "actor_divergence",
)
"""One row per evaluation; fit_* describe the latest ensemble fit (fit_seconds near
--fit-max-seconds means the cap, not early stopping, ended it: the run then depends on timing);
actor_divergence: the mean ||executed action - actor's mean action|| of the training steps since the last
row (the paper's Fig. 4); train_cost is the last finished training episode's cost, train_cost_total
the cost of every training step so far, the seeding phase's included (on the car: the steps spent
violating the constraint, the paper's Fig. 6 "cumulative violations during training"); train_crashes
the training episodes so far that ended by termination (eval_crashes' meaning: the car left the arena,
the hopper fell), empty after a resume from a run saved before it was counted."""


def add_arguments(parser) -> None:
    from loop_ros.core.config import ALGOS

    add_task_argument(parser)
    parser.add_argument("--algo", default="safe-loop", choices=sorted(ALGOS))
    parser.add_argument("--steps", type=positive_int, required=True, help="environment steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--eval-every", type=positive_int, default=2000,
                        help="steps between evaluations and checkpoints (after the seeding phase)")
    parser.add_argument("--eval-episodes", type=positive_int, default=3)
    parser.add_argument("--eval-seed", type=int, default=0, help="as `loop-ros eval --seed`")
    parser.add_argument("--episode-steps", type=int, default=None, help="default: sim.episode_steps of the params")
    for flag, kind, field in TRAINER_FLAGS:
        parser.add_argument(flag, type=kind, default=None, help=f"default: trainer.{field} of the params")
    parser.add_argument("--params", default=None, help="ROS 2 params file (default: the task's own)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one setting, e.g. --set arc.population=100 (repeatable)")
    parser.add_argument("--record", type=Path, default=None,
                        help="also record every training step into this bag directory, as the ROS stack's messages "
                             "(a medium-replay dataset for `loop-ros offline`)")
    parser.add_argument("--resume", action="store_true",
                        help="go on from DIR/resume.pt (saved at every evaluation) when it is there, else start; the "
                             "run's task, algo, seed and settings must be the same (--steps may be larger)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


# ---------------------------------------------------------------- bookkeeping


@dataclasses.dataclass
class EpisodeTally:
    """Sums of the running training episode."""

    ret: float = 0.0
    cost: float = 0.0
    steps: int = 0

    def add(self, reward: float, cost: float) -> None:
        self.ret, self.cost, self.steps = self.ret + reward, self.cost + cost, self.steps + 1


class RunLog:
    """``DIR/metrics.csv`` (one row per evaluation) and ``DIR/metrics.json`` (all rows + settings)."""

    def __init__(self, out: Path, header: dict[str, Any], resumed_at: int | None = None):
        """``resumed_at``: keep the rows already logged up to that step (a resumed run's)."""
        self.out, self.header, self.rows = out, header, []
        with open(out / "metrics.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(CSV_COLUMNS)
        if resumed_at is not None and (out / "metrics.json").exists():
            for row in json.loads((out / "metrics.json").read_text(encoding="utf-8"))["evaluations"]:
                if row["env_steps"] <= resumed_at:
                    self.append(row)

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with open(self.out / "metrics.csv", "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])
        tmp = self.out / "metrics.json.tmp"
        tmp.write_text(json.dumps({**self.header, "evaluations": self.rows}, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.out / "metrics.json")


def provenance(args, settings: dict, row: dict, result: dict) -> dict[str, Any]:
    """The bundle's provenance: what ``bundle.PROVENANCE_KEYS`` asks for plus algo, settings, evaluation."""
    return {"command": command_line("train", args), "steps": row["env_steps"], "seed": args.seed,
            "eval_return": row["eval_return"], "wall_time_s": row["wall_time_s"], "algo": args.algo,
            "task": args.task, "settings": settings,
            "eval": {k: v for k, v in result.items() if k != "per_episode"}}


# ---------------------------------------------------------------- Algorithm 1


def train(args) -> dict[str, Any]:
    """Run Algorithm 1 as configured by ``args``; returns the last evaluation row."""
    from loop_ros.core.config import ConfigError
    from loop_ros.core.run_checkpoint import RESUME_FILE
    from loop_ros.core.tasks import make_task
    from loop_ros.core.trainer import LoopTrainer, set_torch_threads

    task = make_task(args.task)
    if args.record is not None and args.record.exists():
        raise ConfigError(f"--record {args.record} exists (a recording is never overwritten)")
    if args.record is not None and args.resume:
        raise ConfigError("--record and --resume: a recording is not resumed")
    params = load_params(task, args.params, args.set)
    cfgs = section_configs(params, ("arc", "safety", "ensemble", "sac", "trainer"))
    flags = {field: getattr(args, flag[2:].replace("-", "_")) for flag, _, field in TRAINER_FLAGS}
    schedule = dataclasses.replace(cfgs["trainer"], **{k: v for k, v in flags.items() if v is not None})
    if args.algo != "sac" and args.steps < schedule.seed_steps:
        raise ValueError(f"--steps {args.steps} ends before the first model fit at seed_steps {schedule.seed_steps}")
    set_torch_threads(schedule.torch_threads)
    episode_steps = args.episode_steps or params.get("sim.episode_steps")  # else the env's own default
    env = task.make_env(cfgs["safety"], episode_steps, seed=args.seed)
    trainer = LoopTrainer(task, cfgs["arc"], cfgs["safety"], cfgs["ensemble"], cfgs["sac"], args.algo,
                          args.seed, schedule)
    settings = {**{k: dataclasses.asdict(v) for k, v in cfgs.items()}, "trainer": dataclasses.asdict(schedule),
                "episode_steps": env.episode_steps}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    resumed = resumed_run(Path(args.out) / RESUME_FILE, trainer, run_identity(args, task, settings)) \
        if args.resume else None
    recorder = None
    if args.record is not None:
        from loop_ros.core.recording import EpisodeBagWriter

        recorder = EpisodeBagWriter(args.record, task, section_configs(params, ("task",))["task"].control_rate_hz)
    run = TrainingRun(trainer, env, task.make_env(cfgs["safety"], episode_steps), args, settings, recorder, resumed)
    try:
        return run.run()
    finally:
        if recorder is not None:
            recorder.close()


def run_identity(args, task, settings: dict[str, Any]) -> dict[str, Any]:
    """What a resumed run must share with the saved one."""
    return {"task": task.name, "algo": args.algo, "seed": args.seed, "settings": settings}


def resumed_run(path: Path, trainer, identity: dict[str, Any]) -> dict[str, Any] | None:
    """``--resume``: the saved run restored into ``trainer``; None when there is none to resume."""
    from loop_ros.core.config import ConfigError
    from loop_ros.core.learner_state import LearnerStateError
    from loop_ros.core.run_checkpoint import resume_run

    if not path.exists():
        return None
    try:
        return resume_run(path, trainer, identity)
    except LearnerStateError as error:
        raise ConfigError(f"--resume: {error}") from error


class TrainingRun:
    """The loop of Alg. 1 around a ``LoopTrainer``, with periodic evaluations and checkpoints."""

    def __init__(self, trainer, env, eval_env, args, settings: dict[str, Any], recorder=None,
                 resumed: dict[str, Any] | None = None):
        self.trainer, self.env, self.eval_env, self.args, self.settings = trainer, env, eval_env, args, settings
        self.recorder = recorder  # a core.recording.EpisodeBagWriter, or None
        self.pose = getattr(env, "pose", lambda: None)
        self.identity = run_identity(args, trainer.task, settings)
        self.resumed = resumed
        self.log = RunLog(Path(args.out), {"command": command_line("train", args), "settings": settings},
                          resumed_at=resumed["step"] if resumed else None)
        self.started = time.perf_counter() - (resumed["wall_time_s"] if resumed else 0.0)
        self.tally = EpisodeTally()
        self.last_train = EpisodeTally(*resumed["last_train"]) if resumed and resumed["last_train"] else None
        self.episodes = resumed["episodes"] if resumed else 0
        self.cost_total = resumed["cost_total"] if resumed else 0.0  # of every training step so far
        self.crashes: int | None = resumed.get("crashes") if resumed else 0  # None: not known (CSV_COLUMNS)
        self.fit: dict[str, Any] = resumed["fit"] if resumed else {}
        self.sac: dict[str, float] = resumed["sac"] if resumed else {}
        self.divergences: list[float] = []  # of the training steps since the last evaluation
        self.rng = np.random.default_rng(args.seed)  # acting
        if resumed:
            self.rng.bit_generator.state = resumed["rng"]

    def run(self) -> dict[str, Any]:
        """Train for ``args.steps`` environment steps; returns the final evaluation row."""
        from tqdm import tqdm

        args, rng = self.args, self.rng
        if self.resumed:  # the episode under way at the save ended there
            start, row = self.resumed["step"], self.log.rows[-1]
            if start >= args.steps:
                return row
            self.trainer.end_episode()
            state = self.env.reset(seed=args.seed + start)
        else:
            start, state, row = 0, self.env.reset(seed=args.seed), self.evaluate(None)
        if self.recorder:
            self.recorder.reset(state, self.pose())
        bar = tqdm(total=args.steps, initial=start, disable=args.no_progress, mininterval=1.0, unit="step")
        for step in range(start + 1, args.steps + 1):
            state, speed = self.step(state, rng)
            if step % args.eval_every == 0 and step < args.steps and step >= self.trainer.schedule.seed_steps:
                row = self.evaluate(Path(args.out) / f"checkpoint_{step}")
            last = self.last_train
            bar.update(1)
            bar.set_postfix(ret=_fmt(last and last.ret), cost=_fmt(last and last.cost), speed=_fmt(speed),
                            eval=_fmt(row["eval_return"]), refresh=False)
        bar.close()
        return self.evaluate(Path(args.out) / "bundle")

    def step(self, state: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """Alg. 1 l.3-7 for one environment step; returns the next state and the car's speed."""
        trainer = self.trainer
        action = trainer.act(state, rng, explore=True)
        divergence = trainer.actor_divergence(state, action)
        if divergence is not None:
            self.divergences.append(divergence)
        next_state, reward, cost, terminated, truncated, info = self.env.step(action)
        trainer.add_transition(state, action, reward, next_state, terminated)
        if self.recorder:
            self.recorder.step(action, next_state, self.pose(), reward, cost, terminated, truncated)
        self.sac = trainer.update() or self.sac
        self.fit = trainer.refit_model_if_due() or self.fit
        self.tally.add(reward, cost)
        self.cost_total += cost
        if terminated and self.crashes is not None:
            self.crashes += 1
        if terminated or truncated:
            self.last_train, self.tally, self.episodes = self.tally, EpisodeTally(), self.episodes + 1
            trainer.end_episode()
            state = self.env.reset()
            if self.recorder:
                self.recorder.reset(state, self.pose())
            return state, info["speed"]
        return next_state, info["speed"]

    def evaluate(self, export_to: Path | None) -> dict[str, Any]:
        """Evaluate a fresh evaluation-mode planner, log the row, export a bundle to ``export_to``."""
        trainer, last = self.trainer, self.last_train
        from loop_ros.core.episodes import evaluate_planner

        result = evaluate_planner(self.eval_env, trainer.planner(), self.args.eval_episodes, self.args.eval_seed)
        row = {
            "env_steps": trainer.steps, "wall_time_s": round(time.perf_counter() - self.started, 2),
            "eval_return": result["mean_return"], "eval_cost": result["mean_cost"],
            "eval_violations": result["violations_per_episode"], "eval_mean_speed": result["mean_speed"],
            "eval_radius_error": result["mean_radius_error"], "eval_crashes": result["crashes"],
            "eval_plan_ms": result["mean_plan_ms"], "train_episodes": self.episodes,
            "train_return": last.ret if last else None, "train_cost": last.cost if last else None,
            "train_cost_total": self.cost_total, "train_crashes": self.crashes,
            "fits": trainer.fits, "holdout_mse": self.fit.get("elite_holdout_mse"),
            "fit_epochs": self.fit.get("epochs"), "fit_seconds": self.fit.get("seconds"),
            "sac_updates": trainer.sac_updates, "alpha": trainer.sac.alpha, "q_mean": self.sac.get("q_mean"),
            "actor_divergence": float(np.mean(self.divergences)) if self.divergences else None,
        }
        self.divergences = []
        self.log.append(row)
        if export_to is not None:
            trainer.export(export_to, version=trainer.steps, provenance=provenance(self.args, self.settings, row, result))
            self.save()
        return row

    def save(self) -> None:
        """The run as ``--resume`` restores it (``core.run_checkpoint``), at this evaluation."""
        from loop_ros.core.run_checkpoint import RESUME_FILE, save_run

        last = self.last_train
        run = {"identity": self.identity, "step": self.trainer.steps, "episodes": self.episodes,
               "cost_total": self.cost_total, "crashes": self.crashes,
               "last_train": dataclasses.astuple(last) if last else None,
               "rng": self.rng.bit_generator.state, "wall_time_s": time.perf_counter() - self.started,
               "fit": self.fit, "sac": self.sac}
        save_run(Path(self.args.out) / RESUME_FILE, self.trainer, run)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def run(args) -> int:
    from loop_ros.core.config import ConfigError
    from loop_ros.core.tasks.base import NoSimulator

    try:
        row = train(args)
    except (ConfigError, NoSimulator) as error:
        print(f"loop-ros train: {error}", file=sys.stderr)
        return 2
    print(json.dumps(row, indent=2))
    return 0

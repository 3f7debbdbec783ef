"""Learn a controller from recorded bags alone: `loop-ros offline --task rc_car --data DIR [DIR ...] --out OUT`.

Offline LOOP (Alg. 2 of the paper): the datasets' transitions (``core.datasets``: the trainer's
assembler, the same episode-boundary and gap rules) train the dynamics ensemble until its holdout
error stops improving, then an offline value learner (``core.value_learners``: CRR) for
``--steps`` gradient steps; no simulator is needed. Written to OUT:

* ``bundle/``: a normal bundle (provenance: the command, settings, and each dataset's path, sha256
  and counts);
* ``params.yaml``: the task's params with ``task.bundle`` set to it and offline ARC: beta = 1 (the
  prior is the learned actor: plans stay near the data), one iteration, and the pessimistic score
  of Eq. 9 (``arc.beta_pess``, default 1); ``--set`` changes any of them (per dataset, as Table 4).
  Deploy with ``loop-ros up TASK --params OUT/params.yaml --no-trainer`` or the launch file's
  ``params_file:=OUT/params.yaml``;
* ``metrics.json``: the fit, the learner's losses, and with ``--eval-episodes N`` (a task with a
  simulator) the learner's own actor (e.g. CRR) against offline ARC over it (LOOP-CRR) on the same
  episodes, as ``loop-ros eval`` runs them.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from loop_ros.core.params_file import section_configs
from loop_ros.settings import add_task_argument, command_line, load_params, positive_int

OFFLINE_ARC = ("arc.beta=1.0", "arc.iterations=1", "arc.beta_pess=1.0")
"""Offline ARC (paper 5.2, Appendix C.3), applied before ``--set``."""
LOSS_LOG_EVERY = 1000
"""Learner steps between the loss rows of metrics.json."""


def add_arguments(parser) -> None:
    from loop_ros.core.value_learners import OFFLINE_LEARNERS

    add_task_argument(parser)
    parser.add_argument("--data", nargs="+", action="extend", required=True, type=Path,
                        help="datasets: each a rosbag2 bag directory (MCAP or sqlite3) or a directory of bags")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--learner", default="crr", choices=OFFLINE_LEARNERS, help="offline value learner")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="gradient steps of the value learner (default: <learner>.steps of the params)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--params", default=None, help="ROS 2 params file (default: the task's own)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one setting, e.g. --set arc.beta_pess=0.5 (repeatable; after the offline "
                             f"ARC defaults {' '.join(OFFLINE_ARC)})")
    parser.add_argument("--state-topic", default="/state")
    parser.add_argument("--action-topic", default="/action")
    parser.add_argument("--episode-topic", default="/episode")
    parser.add_argument("--eval-episodes", type=int, default=0,
                        help="evaluate the learner's actor and offline ARC in the task's simulator (default: none)")
    parser.add_argument("--eval-seed", type=int, default=0, help="as `loop-ros eval --seed`")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads (default: trainer.torch_threads of the params)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def learn(args) -> dict[str, Any]:
    """Alg. 2 as ``args`` say; returns metrics.json's content."""
    import torch

    from loop_ros.core.config import ConfigError
    from loop_ros.core.datasets import load_datasets
    from loop_ros.core.ensemble import DynamicsEnsemble
    from loop_ros.core.sac import TransitionBuffer
    from loop_ros.core.tasks import make_task
    from loop_ros.core.tasks.base import NoSimulator
    from loop_ros.core.trainer import flush_denormals, set_torch_threads
    from loop_ros.core.transitions import ReplayTopics
    from loop_ros.core.params_file import write_params_file
    from loop_ros.core.value_learners import OFFLINE_LEARNERS, make_offline_learner

    started = time.perf_counter()
    task = make_task(args.task)
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file")
    if args.eval_episodes > 0 and not task.has_simulator:
        raise NoSimulator(f"task {task.name!r} has no simulator to evaluate in: drop --eval-episodes")
    params = load_params(task, args.params, [*OFFLINE_ARC, *args.set])
    cfgs = section_configs(params, ("arc", "safety", "ensemble", "trainer", args.learner))
    steps = args.steps or cfgs[args.learner].steps
    topics = ReplayTopics.for_task(task, args.state_topic, args.action_topic, args.episode_topic)
    dataset = load_datasets(task, args.data, topics, cfgs["trainer"].max_gap_s)
    set_torch_threads(args.threads or cfgs["trainer"].torch_threads)
    flush_denormals()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    data = dataset.arrays  # Alg. 2 l.2: the model, until its holdout error stops improving
    ensemble = DynamicsEnsemble(task.obs_dim, task.act_dim, cfgs["ensemble"], seed=args.seed)
    fit = ensemble.fit(data["s"], data["a"], data["r"], data["s2"], rng)
    buffer = TransitionBuffer(task.obs_dim, task.act_dim, len(dataset))  # Alg. 2 l.3: the value learner
    buffer.add(data["s"], data["a"], data["r"], data["s2"], data["d"])
    learner = make_offline_learner(args.learner, task, cfgs, seed=args.seed, dynamics=ensemble.planning_module())
    losses = train_learner(learner, buffer, steps, cfgs[args.learner].batch_size, rng, args.no_progress)

    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: dataclasses.asdict(v) for k, v in cfgs.items()}
    report = {"command": command_line("offline", args), "task": task.name, "learner": args.learner, "seed": args.seed,
              "transitions": len(dataset), "datasets": dataset.sources, "settings": settings,
              "fit": fit, "learner_steps": steps, "losses": losses}
    bundle = export(args, task, ensemble, learner, report, started)
    # The nodes' settings (the learners' own are in the bundle's provenance), with the new bundle.
    deployment = {**{k: v for k, v in params.items() if k.partition(".")[0] not in OFFLINE_LEARNERS},
                  "task.bundle": str(bundle.resolve())}
    write_params_file(args.out / "params.yaml", deployment)
    if args.eval_episodes > 0:
        report["eval"] = evaluate(task, bundle, deployment, args)
    report["wall_time_s"] = round(time.perf_counter() - started, 2)
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def train_learner(learner, buffer, steps: int, batch_size: int, rng: np.random.Generator,
                  no_progress: bool) -> list[dict]:
    """``steps`` updates on uniform minibatches of ``buffer``; the metrics every ``LOSS_LOG_EVERY``."""
    from tqdm import tqdm

    losses = []
    for step in tqdm(range(1, steps + 1), disable=no_progress, mininterval=1.0, unit="step"):
        metrics = learner.update(buffer.sample(batch_size, rng))
        if step % LOSS_LOG_EVERY == 0 or step == steps:
            losses.append({"step": step, **metrics})
    return losses


def export(args, task, ensemble, learner, report: dict, started: float) -> Path:
    """OUT/bundle, its provenance naming the datasets (version: the transitions learned from)."""
    from loop_ros.core.trainer import export_networks

    provenance = {"command": report["command"], "steps": report["transitions"], "seed": args.seed,
                  "eval_return": None, "wall_time_s": round(time.perf_counter() - started, 2), "algo": "offline",
                  "learner": args.learner, "learner_steps": report["learner_steps"], "task": task.name,
                  "datasets": report["datasets"], "settings": report["settings"]}
    extra = {"algo": f"offline-{args.learner}", "learner": args.learner}
    return export_networks(args.out / "bundle", task, ensemble, learner, report["transitions"], provenance, extra)


def evaluate(task, bundle: Path, params: dict, args) -> dict[str, Any]:
    """The learner's actor alone and offline ARC (the params' controller) on the same episodes."""
    from loop_ros.core.episodes import evaluate_bundle

    results = {}
    for name, controller in (("actor", "actor"), ("loop", params.get("task.controller", "arc"))):
        result = evaluate_bundle(task, controller, bundle, args.eval_episodes, params, args.eval_seed)
        results[name] = {"controller": controller, **{k: v for k, v in result.items() if k != "settings"}}
    base, loop = results["actor"]["mean_return"], results["loop"]["mean_return"]
    results["improvement_pct"] = 100.0 * (loop - base) / abs(base) if base else None
    return results


def run(args) -> int:
    from loop_ros.core.config import ConfigError
    from loop_ros.core.tasks.base import NoSimulator

    try:
        report = learn(args)
    except (ConfigError, NoSimulator) as error:
        print(f"loop-ros offline: {error}", file=sys.stderr)
        return 2
    summary = {"bundle": str(args.out / "bundle"), "params": str(args.out / "params.yaml"),
               "transitions": report["transitions"], "holdout_mse": report["fit"].get("elite_holdout_mse"),
               "wall_time_s": report["wall_time_s"]}
    if "eval" in report:
        summary.update({f"{name}_return": report["eval"][name]["mean_return"] for name in ("actor", "loop")},
                       improvement_pct=report["eval"]["improvement_pct"])
    print(json.dumps(summary, indent=2))
    return 0

"""Record a D4RL-style dataset from a task's simulator into a bag: `loop-ros dataset --task T --policy P --steps N --out DIR`.

The bag holds what ``ros2 bag record /state /action /episode`` would capture of the stack
(``core.recording``), so ``loop-ros offline`` reads it like any robot's bag. Policies:
``random`` (uniform actions), ``actor`` (a bundle's actor, sampled: D4RL's policies are
stochastic), ``planner`` (a bundle with the params' controller, as ``loop-ros eval`` runs it).
The recipe of the four D4RL kinds (README "Offline LOOP"): random = ``--policy random``;
medium = ``--policy actor --bundle`` a checkpoint at about a third to half of the expert's
return; medium-replay = the bag ``loop-ros train --record DIR`` writes while training up to that
checkpoint; medium-expert = the medium and the expert datasets given together to ``offline --data``.
``DIR/dataset.json`` states the policy and the episodes' returns.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from loop_ros.settings import add_task_argument, load_params, positive_int

POLICIES = ("random", "actor", "planner")


def add_arguments(parser) -> None:
    add_task_argument(parser)
    parser.add_argument("--policy", default="random", choices=POLICIES)
    parser.add_argument("--bundle", type=Path, help="model bundle of the actor / planner policies")
    parser.add_argument("--steps", type=positive_int, required=True, help="environment steps to record")
    parser.add_argument("--out", type=Path, required=True, help="the bag directory to create")
    parser.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episode-steps", type=int, default=None, help="default: sim.episode_steps of the params")
    parser.add_argument("--params", default=None, help="ROS 2 params file (default: the task's own)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one setting (repeatable)")


def make_policy(args, task, params: dict):
    """(observation, rng) -> action of ``args.policy``."""
    if args.policy == "random":
        return lambda obs, rng: rng.uniform(task.action_low, task.action_high)
    from loop_ros.core.config import ConfigError
    from loop_ros.core.episodes import bundle_planner

    if args.bundle is None:
        raise ConfigError(f"--policy {args.policy} needs --bundle")
    planner, _ = bundle_planner(task, args.bundle, params, params.get("task.controller", "arc"))
    if args.policy == "actor":
        def actor(obs, rng):
            noise = rng.standard_normal((1, task.act_dim)).astype(np.float32)
            return planner.model.actor(np.asarray(obs, np.float32)[None], noise)[0]
        return actor
    return PlannerPolicy(planner)


class PlannerPolicy:
    """A planner as a policy: its first action in evaluation mode; its warm start forgotten at each
    reset (as ``loop-ros eval`` runs it)."""

    def __init__(self, planner):
        self.planner = planner

    def __call__(self, obs, rng):
        return self.planner.plan(np.asarray(obs, np.float32), rng).action

    def reset(self) -> None:
        self.planner.reset()


def record(args) -> dict:
    from loop_ros.core.params_file import section_configs
    from loop_ros.core.recording import EpisodeBagWriter, record_episodes
    from loop_ros.core.tasks import make_task

    task = make_task(args.task)
    params = load_params(task, args.params, args.set)
    policy = make_policy(args, task, params)
    cfgs = section_configs(params, ("safety", "task"))
    env = task.make_env(cfgs["safety"], args.episode_steps or params.get("sim.episode_steps"), seed=args.seed,
                        control_dt=1.0 / cfgs["task"].control_rate_hz)  # as the sim node runs it
    writer = EpisodeBagWriter(args.out, task, cfgs["task"].control_rate_hz, args.storage)
    try:
        episodes = record_episodes(env, policy, writer, args.steps, np.random.default_rng(args.seed), args.seed)
    finally:
        writer.close()
    finished = [e["return"] for e in episodes if not e.get("cut_short")] or [episodes[0]["return"]]
    summary = {"task": task.name, "policy": args.policy, "bundle": str(args.bundle) if args.bundle else None,
               "steps": args.steps, "seed": args.seed, "storage": args.storage, "messages": writer.messages,
               "episodes": len(episodes), "mean_return": float(np.mean(finished)),
               "std_return": float(np.std(finished)), "per_episode": episodes}
    (args.out / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def run(args) -> int:
    from loop_ros.core.bundle import BundleError
    from loop_ros.core.config import ConfigError
    from loop_ros.core.tasks.base import NoSimulator

    if args.out.exists():
        print(f"loop-ros dataset: {args.out} exists (a dataset is never overwritten)", file=sys.stderr)
        return 2
    try:
        summary = record(args)
    except (BundleError, ConfigError, NoSimulator) as error:
        print(f"loop-ros dataset: {error}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "per_episode"}, indent=2))
    return 0

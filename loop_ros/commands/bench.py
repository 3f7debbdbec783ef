"""Benchmarks (DESIGN.md section 8): `loop-ros bench plan --preset P --backend B --json F`,
`loop-ros bench loop --task T --duration S --json F` and
`loop-ros bench learn --task T... --algo A... --seeds K... --steps N --out DIR`.

The benchmarks themselves are ``loop_ros.bench`` (``plan``, ``loop``, ``smoothing``, ``learn``: what each measures);
this module parses the command, runs one and prints (and writes) its result as JSON.
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from loop_ros.bench.learn import bench_learn
from loop_ros.bench.loop import bench_loop
from loop_ros.bench.plan import BACKENDS, PRESETS, bench_plan
from loop_ros.bench.smoothing import bench_smoothing
from loop_ros.core.tasks import make_task
from loop_ros.settings import add_task_argument, positive_int


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="bench", required=True)
    plan = sub.add_parser("plan", help="planning speed of one preset")
    plan.add_argument("--preset", choices=sorted(PRESETS), default="paper-halfcheetah")
    plan.add_argument("--backend", choices=BACKENDS, default="ort-cpu")
    plan.add_argument("--plans", type=int, default=200, help="timed plans (after warm-up)")
    plan.add_argument("--warmup", type=int, default=20)
    plan.add_argument("--threads", type=int, default=None, help="runtime.intra_op_threads (default: preset's)")
    plan.add_argument("--json", default=None, help="write the results here")
    loop = sub.add_parser("loop", help="sim-in-the-loop for a fixed time under the trainer's load: rate, tick "
                                       "jitter, deadline misses")
    add_task_argument(loop)
    loop.add_argument("--duration", type=float, default=60.0, help="seconds of the run")
    loop.add_argument("--fresh", action="store_true", help="the trainer and the planner start from nothing, as "
                                                          "`loop-ros up --fresh` (default: the task's bundle)")
    loop.add_argument("--foxglove", action="store_true", help="also run the Foxglove bridge (its cost, with "
                                                             "whatever viewer connects)")
    loop.add_argument("--params", default=None, help="ROS 2 params file (default: the task's own)")
    loop.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID of the nodes")
    loop.add_argument("--trainer-cpus", type=float, default=None,
                      help="hold the trainer to this many cores (cgroup CPU quota, needs root): a slow learner")
    loop.add_argument("--json", default=None, help="write the results here")
    smoothing = sub.add_parser("smoothing", help="closed-loop return of ARC's mean/variance smoothing factors")
    smoothing.add_argument("--episodes", type=int, default=20)
    smoothing.add_argument("--steps", type=int, default=40)
    smoothing.add_argument("--json", default=None, help="write the results here")
    _add_learn_arguments(sub.add_parser("learn", help="a grid of headless trainings (task x algo x seed), "
                                                      "resumable: learning curves and a summary"))


def _add_learn_arguments(learn) -> None:
    from loop_ros.core.config import ALGOS

    learn.add_argument("--task", nargs="+", required=True, help="tasks, as `loop-ros train --task`")
    learn.add_argument("--algo", nargs="+", default=["loop", "sac", "pets"], choices=sorted(ALGOS))
    learn.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    learn.add_argument("--steps", type=positive_int, required=True, help="environment steps of each run")
    learn.add_argument("--eval-every", type=positive_int, default=1000)
    learn.add_argument("--eval-episodes", type=positive_int, default=3)
    learn.add_argument("--jobs", type=positive_int, default=2, help="runs at once (default 2: one per core here)")
    learn.add_argument("--threads", type=positive_int, default=1, help="torch threads of each run")
    learn.add_argument("--out", type=Path, required=True, help="the grid's directory (a rerun skips finished runs)")
    learn.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="passed to every run's `loop-ros train` (repeatable)")


def run(args) -> int:
    if args.bench == "smoothing":
        result = bench_smoothing(args.episodes, args.steps)
    elif args.bench == "learn":
        signal.signal(signal.SIGTERM, _interrupt)  # the grid stops its runs on the way out (bench.learn)
        extra = [option for setting in args.set for option in ("--set", setting)]
        result = bench_learn(args.task, args.algo, args.seeds, args.out, args.steps, args.eval_every,
                             args.eval_episodes, args.jobs, args.threads, extra)
        print((args.out / "summary.md").read_text(encoding="utf-8"), end="")
        for failure in result["failed"]:
            print(f"loop-ros bench learn: failed: {failure}", file=sys.stderr)
        return 1 if result["failed"] else 0
    elif args.bench == "loop":
        from loop_ros.cpu_quota import CpuQuotaError

        try:
            result = bench_loop(make_task(args.task), args.duration, args.fresh, args.params, args.domain_id, args.foxglove,
                                args.trainer_cpus)
        except CpuQuotaError as error:
            print(f"loop-ros bench loop: {error}", file=sys.stderr)
            return 2
    else:
        result = bench_plan(args.preset, args.backend, args.plans, args.warmup, args.threads)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")

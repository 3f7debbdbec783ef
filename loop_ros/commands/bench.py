"""Benchmarks (DESIGN.md section 8): `loop-ros bench plan --preset P --backend B --json F` and
`loop-ros bench loop --task T --duration S --json F`.

`bench plan` plans with networks of the preset's sizes (random weights: speed does not depend on them),
and reports plans/s, median and p99 latency, the plan's matmul FLOPs, a plain fp32 GEMM of
the plan's widest layer measured in the same run on the same threads, and their ratio.
The ORT backends build the bundle in a child process, so this process (like the planner
node) never imports torch and its peak RSS is the planner's.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from loop_ros.core.tasks import make_task
from loop_ros.nodes import TRAINER
from loop_ros.settings import TASK_HELP, params_file_of, task_argument
from loop_ros.stack import bring_up, fresh_overrides

PRESETS = {
    # Table 3 of the paper: H=3, N=100, P=4, K=5, 5 iterations; HalfCheetah dims; model reward.
    "paper-halfcheetah": dict(task="gym:HalfCheetah-v5", own_params=False,
                              arc=dict(horizon=3, population=100, particles=4, iterations=5, beta=0.05),
                              ensemble=dict(ensemble_size=5, num_elites=5, hidden=(200, 200, 200, 200)),
                              sac=dict(hidden=(256, 256)), safety=dict(enabled=False)),
    # What the RC car really runs: the settings of its params file (config/rc_car.yaml).
    "rc-car": dict(task="rc_car", own_params=True, safety=dict(enabled=False)),
    "safe-rc-car": dict(task="rc_car", own_params=True, safety=dict(enabled=True)),
}
BACKENDS = ("ort-cpu", "ort-cuda", "torch")


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
    loop.add_argument("--task", type=task_argument, default="rc_car", help=TASK_HELP)
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


def run(args) -> int:
    if args.bench == "smoothing":
        result = bench_smoothing(args.episodes, args.steps)
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


# ---------------------------------------------------------------- settings and models


def preset_settings(name: str, threads: int | None = None) -> dict:
    """The preset's task, dims and config dataclasses (``arc``, ``safety``, ``ensemble``, ``sac``, ``runtime``)."""
    from loop_ros.core import config
    from loop_ros.core.tasks import make_task

    preset = PRESETS[name]
    task = make_task(preset["task"])
    params = config.load_params_file(str(params_file_of(task))) if preset["own_params"] else {}
    sections = {s: {k.partition(".")[2]: v for k, v in params.items() if k.startswith(s + ".")}
                for s in ("arc", "safety", "ensemble", "sac", "runtime")}
    for section in ("arc", "safety", "ensemble", "sac"):
        sections[section].update(preset.get(section, {}))
    if threads:
        sections["runtime"]["intra_op_threads"] = threads
    cfgs = {s: config.build_section(s, values) for s, values in sections.items()}
    return dict(task=task, **cfgs)


def random_modules(task, ensemble_cfg, sac_cfg, seed: int = 0):
    """Torch modules of the contract with the given sizes (weights barely trained: speed only)."""
    import numpy as np

    from loop_ros.core.ensemble import DynamicsEnsemble
    from loop_ros.core.sac import Sac

    rng = np.random.default_rng(seed)
    S, A, n = task.obs_dim, task.act_dim, 64
    states = rng.standard_normal((n, S)).astype(np.float32)
    actions = rng.uniform(-1, 1, (n, A)).astype(np.float32)
    ensemble = DynamicsEnsemble(S, A, ensemble_cfg, seed=seed)
    ensemble.fit(states, actions, np.zeros(n, np.float32), states + 0.01 * states, rng, max_epochs=1)
    sac = Sac(S, A, task.action_low, task.action_high, sac_cfg, seed=seed)
    return ensemble.planning_module(), sac.actor_module(), sac.critic_module()


def _export_random_bundle(preset: str, out_dir: str) -> None:
    from loop_ros.core.bundle import export_bundle

    s = preset_settings(preset)
    task = s["task"]
    export_bundle(out_dir, *random_modules(task, s["ensemble"], s["sac"]), task=task.name,
                  obs_dim=task.obs_dim, act_dim=task.act_dim, ensemble_size=s["ensemble"].num_elites,
                  action_low=task.action_low, action_high=task.action_high, version=0,
                  provenance=dict(command=f"loop-ros bench plan --preset {preset}", steps=0, seed=0,
                                  eval_return=None, wall_time_s=0.0))


def build_model(preset: str, backend: str, settings: dict):
    """(PlanningModel, matmul weight sizes per graph) for the backend."""
    from loop_ros.core.bundle import read_bundle

    with tempfile.TemporaryDirectory() as tmp:
        child = multiprocessing.get_context("spawn").Process(target=_export_random_bundle, args=(preset, tmp))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError("exporting the benchmark bundle failed")
        bundle = read_bundle(tmp)
    weights = matmul_weight_sizes(bundle)
    if backend == "torch":
        from loop_ros.core.torch_model import TorchPlanningModel

        return TorchPlanningModel(*random_modules(settings["task"], settings["ensemble"], settings["sac"])), weights
    from loop_ros.core.runtime import OrtPlanningModel

    runtime = dataclasses.replace(settings["runtime"], device="cuda" if backend == "ort-cuda" else "cpu")
    return OrtPlanningModel(bundle, runtime), weights


def matmul_weight_sizes(bundle) -> dict[str, list[tuple[int, ...]]]:
    """Shapes of the constant weights of every MatMul / Gemm in each graph."""
    import onnx
    from onnx import numpy_helper

    shapes = {}
    for name in ("dynamics.onnx", "actor.onnx", "critic.onnx"):
        graph = onnx.load_from_string(bundle.files[name]).graph
        inits = {init.name: numpy_helper.to_array(init).shape for init in graph.initializer}
        shapes[name.split(".")[0]] = [inits[n.input[1]] for n in graph.node
                                      if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits]
    return shapes


class FlopCountingModel:
    """Counts matmul FLOPs of every call: 2 * rows * sum of weight sizes, rows = the batch axis B.

    (Dynamics weights are (K, in, out) and each member sees B rows; twin critics see B rows each.)
    """

    def __init__(self, model, weight_shapes):
        self.model, self.flops = model, 0
        self.ensemble_size, self.obs_dim, self.act_dim = model.ensemble_size, model.obs_dim, model.act_dim
        self.per_row = {g: 2 * sum(int(_prod(s)) for s in shapes) for g, shapes in weight_shapes.items()}

    def dynamics(self, state, action, noise):
        self.flops += state.shape[1] * self.per_row["dynamics"]
        return self.model.dynamics(state, action, noise)

    def actor(self, state, noise):
        self.flops += state.shape[0] * self.per_row["actor"]
        return self.model.actor(state, noise)

    def critic(self, state, action):
        self.flops += state.shape[0] * self.per_row["critic"]
        return self.model.critic(state, action)


def _prod(shape) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


# ---------------------------------------------------------------- measurements


def bench_start_state(task):
    import numpy as np

    return np.asarray(task.start_state(), dtype=np.float32)


def time_plans(planner, state, plans: int, rng) -> list[float]:
    latencies = []
    for _ in range(plans):
        start = time.perf_counter()
        planner.plan(state, rng)
        latencies.append(time.perf_counter() - start)
    return latencies


def gemm_runner(rows: int, width: tuple[int, int], backend: str, runtime):
    """A call running a plain fp32 (rows x in) @ (in x out) product on the plan's runtime and threads."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, width[0])).astype(np.float32)
    w = rng.standard_normal(width).astype(np.float32)
    if backend == "torch":
        import torch

        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        return lambda: torch.matmul(xt, wt)
    from onnx import TensorProto, helper, numpy_helper

    from loop_ros.core.runtime import make_session

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, width[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, width[1]])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = make_session(model.SerializeToString(), runtime.device, runtime.intra_op_threads, spinning=True)
    return lambda: session.run(None, {"x": x})


def median_seconds(run_once, repeats: int) -> float:
    import numpy as np

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def iteration_layers(settings: dict, ensemble_size: int) -> list[tuple[int, ...]]:
    """Widths of each MLP that one ARC iteration runs on a member's P*N rollouts, as the fused
    rollout graph runs them: H dynamics steps, then the terminal actor and the critic heads."""
    from loop_ros.core.arc import terminal_kind
    from loop_ros.core.config import TerminalValue

    task, arc, hidden = settings["task"], settings["arc"], settings["sac"].hidden
    S, A = task.obs_dim, task.act_dim
    dynamics = (S + A, *settings["ensemble"].hidden, 2 * S + 1)
    actor, critic = (S, *hidden, 2 * A), (S + A, *hidden, 1)
    terminal = {TerminalValue.DISCOUNTED: [actor, critic, critic], TerminalValue.AUTHORS: [critic, critic],
                TerminalValue.NONE: []}[terminal_kind(arc)]
    return ([dynamics] * arc.horizon + terminal) * ensemble_size


def layers_runner(chains: list[tuple[int, ...]], rows: int, runtime):
    """(call, FLOPs of a call): the MLPs ``chains`` (Gemm with bias, ReLU between layers) on
    ``rows`` rows each and nothing else, split over the threads as the planner splits its rollouts."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from loop_ros.core.runtime import make_session

    def graph(part_rows: int) -> bytes:
        rng, nodes, inits, inputs, outputs = np.random.default_rng(0), [], [], {}, []
        for c, widths in enumerate(chains):
            x = f"x{widths[0]}"
            inputs.setdefault(x, helper.make_tensor_value_info(x, TensorProto.FLOAT, [part_rows, widths[0]]))
            for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
                w, b, y = f"w{c}_{i}", f"b{c}_{i}", f"y{c}_{i}"
                inits += [numpy_helper.from_array(rng.standard_normal((n_in, n_out)).astype(np.float32), w),
                          numpy_helper.from_array(np.zeros(n_out, np.float32), b)]
                nodes.append(helper.make_node("Gemm", [x, w, b], [y]))
                if i < len(widths) - 2:
                    nodes.append(helper.make_node("Relu", [y], [y + "r"]))
                    y += "r"
                x = y
            outputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [part_rows, widths[-1]]))
        model = helper.make_model(helper.make_graph(nodes, "layers", list(inputs.values()), outputs, inits),
                                  opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        return model.SerializeToString()

    parts = runtime.intra_op_threads if runtime.device == "cpu" else 1
    bounds = np.linspace(0, rows, parts + 1).astype(int)
    runs = []
    for part_rows in np.diff(bounds):
        session = make_session(graph(int(part_rows)), runtime.device, 1 if parts > 1 else runtime.intra_op_threads,
                               spinning=True)
        feeds = {i.name: np.ones(i.shape, np.float32) for i in session.get_inputs()}
        runs.append(lambda session=session, feeds=feeds: session.run(None, feeds))
    pool = ThreadPoolExecutor(max(1, parts - 1))

    def run_once():
        others = [pool.submit(run) for run in runs[1:]]
        runs[0]()
        for future in others:
            future.result()

    flops = 2 * rows * sum(a * b for widths in chains for a, b in zip(widths[:-1], widths[1:]))
    return run_once, flops


ROUNDS = 20
GEMMS_PER_ROUND = 40
LAYER_ROUNDS = 10


def bench_plan(preset: str, backend: str, plans: int = 200, warmup: int = 20, threads: int | None = None) -> dict:
    """Times ``plans`` plans in ``ROUNDS`` rounds, each followed by GEMMs of the plan's widest layer.

    The throughput of the shared VM varies over seconds (a 2-thread GEMM measured 240-365 GF/s
    within a minute), so each round's plan median is divided by the GEMM rate measured right
    after it, and ``flop_limit_ratio`` is the median of these paired ratios.
    """
    import numpy as np

    from loop_ros.core.arc import ArcPlanner

    s = preset_settings(preset, threads)
    if backend == "torch":
        import torch

        torch.set_num_threads(s["runtime"].intra_op_threads)
    model, weight_shapes = build_model(preset, backend, s)
    task, state = s["task"], bench_start_state(s["task"])

    counter = FlopCountingModel(model, weight_shapes)
    ArcPlanner(counter, task, s["arc"], s["safety"]).plan(state, np.random.default_rng(0))
    flops_per_plan = counter.flops

    arc = s["arc"]
    widest = max((tuple(shape[-2:]) for shapes in weight_shapes.values() for shape in shapes), key=_prod)
    rows = model.ensemble_size * arc.particles * arc.population
    gemm = gemm_runner(rows, widest, backend, s["runtime"])
    gemm_flops = 2.0 * rows * widest[0] * widest[1]
    planner, rng = ArcPlanner(model, task, s["arc"], s["safety"]), np.random.default_rng(0)
    time_plans(planner, state, warmup, rng)
    median_seconds(gemm, GEMMS_PER_ROUND)
    latencies, round_ratios, gemm_rates = [], [], []
    for plans_in_round in np.diff(np.linspace(0, plans, ROUNDS + 1).astype(int)):
        round_latencies = time_plans(planner, state, int(plans_in_round), rng)
        gemm_rates.append(gemm_flops / median_seconds(gemm, GEMMS_PER_ROUND))
        round_ratios.append(flops_per_plan / float(np.median(round_latencies)) / gemm_rates[-1])
        latencies += round_latencies
    latencies = np.asarray(latencies)
    median = float(np.median(latencies))
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the planner's, before the ceiling's sessions
    # the ceiling: the plan's MLP layers alone, on this runtime and these threads
    layers, layer_flops = layers_runner(iteration_layers(s, model.ensemble_size), arc.particles * arc.population,
                                        s["runtime"])
    median_seconds(layers, warmup)
    layers_ratios = []
    for _ in range(LAYER_ROUNDS):
        layer_rate = layer_flops / median_seconds(layers, GEMMS_PER_ROUND)
        layers_ratios.append(layer_rate / (gemm_flops / median_seconds(gemm, GEMMS_PER_ROUND)))
    return {
        "preset": preset, "backend": backend, "providers": getattr(model, "providers", ["torch-cpu"]),
        "plans": plans, "plans_per_s": plans / float(latencies.sum()),
        "median_ms": 1e3 * median, "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
        "flops_per_plan": int(flops_per_plan), "achieved_gflops": flops_per_plan / median / 1e9,
        "gemm_shape": [rows, *widest], "gemm_gflops": float(np.median(gemm_rates)) / 1e9,
        "gemm_gflops_range": [min(gemm_rates) / 1e9, max(gemm_rates) / 1e9],
        "flop_limit_ratio": float(np.median(round_ratios)),
        "flop_limit_ratio_range": [min(round_ratios), max(round_ratios)],
        "layers_only_ratio": float(np.median(layers_ratios)),
        "peak_rss_mb": peak_rss_mb,
        "settings": {"arc": dataclasses.asdict(arc), "safety": dataclasses.asdict(s["safety"]),
                     "ensemble": dataclasses.asdict(s["ensemble"]), "sac": dataclasses.asdict(s["sac"]),
                     "runtime": dataclasses.asdict(s["runtime"]), "task": task.name},
        "machine": machine(),
    }


def machine() -> dict:
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version()}


# ---------------------------------------------------------------- sim in the loop

LOOP_SEED_STEPS = 100


def bench_loop(task, duration: float, fresh: bool = False, params: str | None = None,
               domain_id: int | None = None, foxglove: bool = False, trainer_cpus: float | None = None) -> dict:
    """``loop-ros up`` with the trainer for ``duration`` s, its replay in a temporary data_dir (so
    every run starts alike and the user's replay is untouched), reduced to the real-time figures:
    achieved rate, tick jitter (|period - 1/rate|), deadline misses, and the trainer's load."""
    from loop_ros.core.config import load_params_file, section_fields

    params_file = params_file_of(task, params)
    with tempfile.TemporaryDirectory(prefix="loop-ros-bench-loop-") as data_dir:
        # Not fresh: learning starts after LOOP_SEED_STEPS transitions (2 s), so the load is there all run long.
        overrides = fresh_overrides(Path(data_dir)) if fresh else {
            TRAINER: (f"trainer.data_dir:={data_dir}", f"trainer.seed_steps:={LOOP_SEED_STEPS}")}
        summary, clean = bring_up(task, params_file, duration, overrides, trainer=True, domain_id=domain_id,
                                  foxglove=foxglove, keys_dir=Path(data_dir) / "keys", trainer_cpus=trainer_cpus,
                                  explore=fresh)
    target_hz = (load_params_file(str(params_file), "planner") if params_file else {}).get(
        "task.control_rate_hz", section_fields("task")["control_rate_hz"].default)
    return loop_figures(summary, clean, target_hz, duration, fresh)


def loop_figures(summary: dict, clean: bool, target_hz: float, duration: float, fresh: bool) -> dict:
    """The figures of ``bench loop`` from a merged ``loop-ros up`` summary."""
    nodes = summary["nodes"]
    planner, trainer = nodes.get("planner") or {}, nodes.get(TRAINER) or {}
    wall_s = summary["wall_time_s"]
    return {
        "task": summary["task"], "duration_s": duration, "fresh": fresh, "clean_exit": clean,
        "stopped_because": summary["stopped_because"], "target_hz": target_hz,
        **{key: summary[key] for key in ("ticks", "achieved_hz", "tick_jitter_p99_ms", "tick_period_p99_ms",
                                         "deadline_misses", "swap_deadline_misses", "stale_states",
                                         "plan_latency_median_ms", "plan_latency_p99_ms", "model_swaps")},
        "tick_period_max_ms": planner.get("tick_period_max_ms"),
        "ticks_by_source": planner.get("ticks_by_source"),
        # the load: what the trainer did, and its share of the machine's cores over the run
        "trainer": {key: trainer.get(key) for key in ("transitions", "sac_updates", "fits", "models_published",
                                                       "backlog", "sac_updates_skipped", "forced_publications")},
        "learning": summary.get("learning"),
        "cpu_share": {name: (node or {}).get("process_cpu_s", 0.0) / wall_s / (os.cpu_count() or 1)
                      for name, node in nodes.items()},
        "machine": machine(),
    }


# ---------------------------------------------------------------- smoothing factors

SMOOTHING = {"paper (0.1, 0.1)": (0.1, 0.1), "authors (1.0, 0.9)": (1.0, 0.9),
             "(0.5, 0.5)": (0.5, 0.5), "(1.0, 1.0)": (1.0, 1.0)}


def bench_smoothing(episodes: int = 20, steps: int = 40) -> dict:
    """Closed-loop return on the point mass with its exact model (a poor actor, a rough value),
    Table 3 settings otherwise, for each (alpha_mean, alpha_var): which default plans best."""
    import numpy as np

    from loop_ros.core.arc import ArcPlanner
    from loop_ros.core.config import ArcConfig, SafetyConfig
    from loop_ros.core.tasks.point_mass import PointMassModel, PointMassTask, point_mass_step

    task, model = PointMassTask(), PointMassModel(ensemble_size=5, noise_std=0.02, actor_target=(-1.0, 0.0))
    results = {}
    for (name, (alpha_mean, alpha_var)), eta in itertools.product(SMOOTHING.items(), (1.0, 0.1)):
        arc = ArcConfig(alpha_mean=alpha_mean, alpha_var=alpha_var, eta=eta)
        returns = []
        for episode in range(episodes):
            rng = np.random.default_rng(episode)
            planner, s, total = ArcPlanner(model, task, arc, SafetyConfig()), np.zeros(4, np.float32), 0.0
            s[:2] = rng.uniform(-1, 1, 2)
            for _ in range(steps):
                a = planner.plan(s, rng).action
                s_next = point_mass_step(s, a).astype(np.float32)
                total += float(task.reward(s, a, s_next))
                s = s_next
            returns.append(total)
        results[f"{name}, eta {eta}"] = {"mean_return": float(np.mean(returns)), "std_return": float(np.std(returns))}
    return {"task": "point_mass", "episodes": episodes, "steps": steps, "results": results}

"""``loop-ros bench plan``: planning speed of one preset on one backend.

Plans with networks of the preset's sizes (random weights: speed does not depend on them), and
reports plans/s, median and p99 latency, the plan's matmul FLOPs, a plain fp32 GEMM of the plan's
widest layer measured in the same run on the same threads, and their ratio. The ORT backends build
the bundle in a child process (``_export_random_bundle``, started with ``spawn``), so this process
(like the planner node) never imports torch and its peak RSS is the planner's.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import resource
import tempfile
import time

from loop_ros.bench.machine import machine
from loop_ros.settings import params_file_of

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


# ---------------------------------------------------------------- settings and models


def preset_settings(name: str, threads: int | None = None) -> dict:
    """The preset's task, dims and config dataclasses (``arc``, ``safety``, ``ensemble``, ``sac``, ``runtime``)."""
    from loop_ros.core import params_file
    from loop_ros.core.tasks import make_task

    preset = PRESETS[name]
    task = make_task(preset["task"])
    params = params_file.load_params_file(str(params_file_of(task))) if preset["own_params"] else {}
    sections = {s: {k.partition(".")[2]: v for k, v in params.items() if k.startswith(s + ".")}
                for s in ("arc", "safety", "ensemble", "sac", "runtime")}
    for section in ("arc", "safety", "ensemble", "sac"):
        sections[section].update(preset.get(section, {}))
    if threads:
        sections["runtime"]["intra_op_threads"] = threads
    cfgs = {s: params_file.build_section(s, values) for s, values in sections.items()}
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

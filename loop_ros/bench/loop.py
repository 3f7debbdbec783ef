"""``loop-ros bench loop``: ``loop-ros up`` with the trainer for a fixed time, reduced to the
real-time figures (rate, tick jitter, deadline misses) and the trainer's load."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from loop_ros.bench.machine import machine
from loop_ros.nodes import TRAINER
from loop_ros.settings import params_file_of
from loop_ros.stack import bring_up, fresh_overrides

LOOP_SEED_STEPS = 100


def bench_loop(task, duration: float, fresh: bool = False, params: str | None = None,
               domain_id: int | None = None, foxglove: bool = False, trainer_cpus: float | None = None) -> dict:
    """``loop-ros up`` with the trainer for ``duration`` s, its replay in a temporary data_dir (so
    every run starts alike and the user's replay is untouched), reduced to the real-time figures:
    achieved rate, tick jitter (|period - 1/rate|), deadline misses, and the trainer's load."""
    from loop_ros.core.params_file import load_params_file, section_fields

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
        "exit_codes": summary["exit_codes"], "stopped_because": summary["stopped_because"], "target_hz": target_hz,
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

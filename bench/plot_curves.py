"""Learning curves of `loop-ros train` runs: PNG plot and a markdown table.

    python bench/plot_curves.py RUNS_DIR OUT.png   # RUNS_DIR holds <algo>_s<seed>/metrics.csv

Needs matplotlib (not a runtime dependency: `pip install matplotlib==3.11.2`).
Each algorithm's curve is the mean over its seeds of the evaluation return, with min/max shaded.
"""
from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

COLUMNS = ("eval_return", "eval_cost", "eval_mean_speed", "eval_radius_error")


def load_runs(runs_dir: Path) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """algo -> seed -> column -> values over evaluations (plus 'env_steps')."""
    runs: dict = defaultdict(dict)
    for path in sorted(runs_dir.glob("*_s*/metrics.csv")):
        algo, _, seed = path.parent.name.rpartition("_s")
        with path.open() as f:
            rows = list(csv.DictReader(f))
        runs[algo][int(seed)] = {c: np.array([float(r[c]) for r in rows]) for c in ("env_steps", *COLUMNS)}
    return runs


def final_table(runs) -> str:
    """Markdown table of the last evaluation: mean +- std over seeds."""
    lines = ["| algo | seeds | steps | eval return | cost / episode | speed (m/s) | radius error (m) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for algo, seeds in sorted(runs.items()):
        last = {c: np.array([run[c][-1] for run in seeds.values()]) for c in ("env_steps", *COLUMNS)}
        cells = [f"{last[c].mean():.2f} ± {last[c].std():.2f}" for c in COLUMNS]
        lines.append(f"| {algo} | {len(seeds)} | {int(last['env_steps'].min())} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for algo, seeds in sorted(runs.items()):
        n = min(len(run["env_steps"]) for run in seeds.values())
        steps = next(iter(seeds.values()))["env_steps"][:n]
        for ax, column in zip(axes, ("eval_return", "eval_mean_speed", "eval_radius_error")):
            values = np.stack([run[column][:n] for run in seeds.values()])
            ax.plot(steps, values.mean(0), label=f"{algo} ({len(seeds)} seeds)")
            ax.fill_between(steps, values.min(0), values.max(0), alpha=0.2)
            ax.set_xlabel("environment steps")
            ax.set_title(column)
    axes[0].legend()
    fig.suptitle("RC car, evaluation (3 episodes per point)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    runs = load_runs(Path(sys.argv[1]))
    plot(runs, Path(sys.argv[2]))
    print(final_table(runs))

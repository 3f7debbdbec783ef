"""Offline LOOP results like the paper's Tables 1, 6 and 7: PNG bar chart and a markdown table.

    python bench/plot_offline.py RUNS_DIR OUT.png [RANDOM_RETURN EXPERT_RETURN]
    # RUNS_DIR holds <dataset>_s<seed>/metrics.json; with the two returns, scores are D4RL-normalised:
    # 100 (R - random) / (expert - random)

Each run directory is a `loop-ros offline --eval-episodes N` output; optional ablation evaluations of
its bundle beside it: ``eval_no_pessimism.json`` (arc.beta_pess 0) and ``eval_online_arc.json``
(the online ARC: arc.beta 0.05, the task's iterations, no pessimism), both `loop-ros eval --json`.
Needs matplotlib (not a runtime dependency: `pip install matplotlib==3.11.2`).
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

COLUMNS = {"CRR (actor)": ("metrics", "actor"), "LOOP-CRR": ("metrics", "loop"),
           "LOOP-CRR, beta_pess 0": ("eval_no_pessimism", None), "LOOP-CRR, beta 0.05": ("eval_online_arc", None)}


def returns(run: Path) -> dict[str, float]:
    """Column -> mean evaluation return of one run (columns whose file is absent are left out)."""
    report = json.loads((run / "metrics.json").read_text())
    values = {}
    for column, (source, key) in COLUMNS.items():
        if source == "metrics":
            values[column] = report["eval"][key]["mean_return"]
        elif (run / f"{source}.json").is_file():
            values[column] = json.loads((run / f"{source}.json").read_text())["mean_return"]
    return values


def load(runs_dir: Path) -> dict[str, dict[str, list[float]]]:
    """dataset -> column -> returns over seeds."""
    table: dict = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs_dir.glob("*_s*/metrics.json")):
        dataset = run.parent.name.rpartition("_s")[0]
        for column, value in returns(run.parent).items():
            table[dataset][column].append(value)
    return table


def normalised(table, random_return: float, expert_return: float):
    """The table in D4RL's normalised score, 100 (R - random) / (expert - random)."""
    scale = 100.0 / (expert_return - random_return)
    return {dataset: {c: [(v - random_return) * scale for v in values] for c, values in row.items()}
            for dataset, row in table.items()}


def markdown(table) -> str:
    columns = [c for c in COLUMNS if any(c in row for row in table.values())]
    lines = ["| dataset | seeds | " + " | ".join(columns) + " | LOOP-CRR vs CRR |",
             "| --- | --- |" + " --- |" * (len(columns) + 1)]
    for dataset, row in table.items():
        cells = [f"{np.mean(row[c]):.1f} ± {np.std(row[c]):.1f}" if c in row else "-" for c in columns]
        base, loop = np.mean(row["CRR (actor)"]), np.mean(row["LOOP-CRR"])
        lines.append(f"| {dataset} | {len(row['LOOP-CRR'])} | " + " | ".join(cells)
                     + f" | {100 * (loop - base) / abs(base):+.1f} % |")
    return "\n".join(lines)


def plot(table, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in COLUMNS if any(c in row for row in table.values())]
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(2.2 * len(table) + 2, 4))
    for i, column in enumerate(columns):
        means = [np.mean(row[column]) if column in row else np.nan for row in table.values()]
        stds = [np.std(row[column]) if column in row else 0.0 for row in table.values()]
        ax.bar(np.arange(len(table)) + i * width, means, width, yerr=stds, label=column, capsize=3)
    ax.set_xticks(np.arange(len(table)) + 0.4 - width / 2, list(table))
    ax.set_ylabel("evaluation score (mean ± std over seeds)")
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str]) -> int:
    runs_dir, out = Path(argv[0]), Path(argv[1])
    table = load(runs_dir)
    if len(argv) == 4:
        table = normalised(table, float(argv[2]), float(argv[3]))
    print(markdown(table))
    plot(table, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Our SAC's evaluation curves on one task beside SB3's published one (bench/RESULTS.md, "Our SAC
against a published reference"): one PNG.

    python bench/sac_reference/plot_reference.py bench/sac_reference HalfCheetah bench/sac_reference/halfcheetah_sac.png
    python bench/sac_reference/plot_reference.py bench/sac_reference Hopper bench/sac_reference/hopper_sac.png

Reads sb3_sac_eval.csv (rows of <Task>-v3) and every <task>_sac_<run>.csv (a `loop-ros train`
metrics.csv) beside it.
Needs matplotlib (not a runtime dependency: `pip install matplotlib==3.11.2`).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def main(folder: Path, task: str, out: Path) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    reference = [r for r in rows(folder / "sb3_sac_eval.csv") if r["env"] == f"{task}-v3"]
    reference = [r for r in reference if int(r["env_steps"]) <= 100_000]
    ax.plot([int(r["env_steps"]) for r in reference], [float(r["eval_return_mean"]) for r in reference],
            "k-o", label="SB3 SAC (published, 1 seed)")
    prefix = f"{task.lower()}_sac_"
    for path in sorted(folder.glob(prefix + "*.csv")):
        run = rows(path)
        ax.plot([int(r["env_steps"]) for r in run], [float(r["eval_return"]) for r in run],
                "--" if "default" in path.stem else "-", label=path.stem.removeprefix(prefix))
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(f"SAC on {task}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))

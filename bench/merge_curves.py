"""One PNG of curves from several `loop-ros bench learn` grids (bench/RESULTS.md): each ``--curve
NAME=DIR:ALGO`` takes ALGO's curve of ``--key`` for ``--task`` from DIR/summary.json and draws it as NAME,
up to ``--steps`` environment steps. It lets grids run with different settings (the constraint on or off)
share one picture, e.g. the training violations of safeLOOP, LOOP, SAC, PETS and safePETS:

    .venv/bin/python bench/merge_curves.py --task rc_car_drift --key training_cost --steps 20000 \\
        --curve LOOP=bench/learn_rc_car_drift_60000:loop --curve safeLOOP=bench/learn_rc_car_drift_safe:loop \\
        --png training_cost.png
"""
import argparse
import json
from pathlib import Path

from loop_ros.bench.curves import plot_curves

TITLES = {"curves": "evaluation return", "training_cost": "cumulative cost of the training steps (steps "
          "violating the constraint)", "actor_divergence": "||executed action - actor's mean action|| while training"}


def merged(specs: list[str], task: str, key: str, steps: int) -> dict[str, dict]:
    """``{NAME: curve}`` of each ``NAME=DIR:ALGO``, cut at ``steps``; ValueError says what is missing."""
    table = {}
    for spec in specs:
        name, _, source = spec.partition("=")
        directory, _, algo = source.rpartition(":")
        if not (name and directory and algo) or name in table:
            raise ValueError(f"--curve {spec!r}: expected a new NAME=DIR:ALGO")
        summary = json.loads((Path(directory) / "summary.json").read_text(encoding="utf-8"))
        curves = summary.get(key, {}).get(task, {})
        if algo not in curves:  # e.g. pets has no actor_divergence; a cost-free task no training_cost
            raise ValueError(f"{directory}: no {key} curve of {algo} on {task} (has: {sorted(curves) or 'none'})")
        kept = [k for k, x in enumerate(curves[algo]["env_steps"]) if x <= steps]
        if not kept:
            raise ValueError(f"{directory}: {algo}'s {key} curve has no point at or below {steps} steps")
        table[name] = {field: [curves[algo][field][k] for k in kept] for field in ("env_steps", "mean", "std")}
        table[name]["seeds"] = curves[algo]["seeds"]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--key", choices=sorted(TITLES), default="curves")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--curve", action="append", required=True, metavar="NAME=DIR:ALGO")
    parser.add_argument("--png", required=True)
    args = parser.parse_args()
    try:
        table = merged(args.curve, args.task, args.key, args.steps)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    plot_curves(table, f"{args.task}: {TITLES[args.key]}, mean +- std over seeds", Path(args.png))


if __name__ == "__main__":
    main()

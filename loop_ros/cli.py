"""The ``loop-ros`` command: one subcommand per module, each with ``add_arguments`` and ``run``."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module defining add_arguments(parser) and run(args) -> int
SUBCOMMANDS = {
    "bench": "loop_ros.commands.bench",
    "up": "loop_ros.commands.up",
    "train": "loop_ros.commands.train",
    "eval": "loop_ros.commands.eval",
    "offline": "loop_ros.commands.offline",
    "dataset": "loop_ros.commands.dataset",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loop-ros", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=module.__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

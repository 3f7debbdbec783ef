"""The ``loop-ros`` subcommands, side by side: each module has ``add_arguments(parser)`` and
``run(args) -> int``; what they share is in ``loop_ros.settings`` (params and settings),
``loop_ros.stack`` (running nodes) and ``loop_ros.core.episodes`` (evaluation episodes)."""

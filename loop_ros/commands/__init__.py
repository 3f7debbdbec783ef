"""The ``loop-ros`` subcommands, side by side: each module has ``add_arguments(parser)`` and
``run(args) -> int``; what they share is in ``loop_ros.settings`` (params file, bundle, parameters), ``loop_ros.core.params_file`` (config sections),
``loop_ros.stack`` (running nodes) and ``loop_ros.core.episodes`` (evaluation episodes)."""

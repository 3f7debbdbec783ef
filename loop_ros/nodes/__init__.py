"""ROS 2 nodes: thin rclpy shells that convert messages to arrays around ``loop_ros.core``.

This module holds what every node's ``main()`` shares (spinning a node until SIGINT/SIGTERM,
then writing its JSON summary) and which nodes run a task, in which order, for ``loop-ros up``
and the launch file. It imports only the standard library at the top so ``loop-ros up`` stays light.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

TRAINER = "trainer"
"""Started first (unless ``--no-trainer``) and stopped last, so it records every tick."""
FOXGLOVE = "foxglove_bridge"
"""Started last on request: serves the planner's view to Foxglove on 127.0.0.1:8765."""
TRAINER_ENV = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000"}
"""glibc malloc made eager torch 15-40 % slower and erratic without these (STACK_NOTES)."""


def task_nodes(task) -> tuple[str, ...]:
    """The nodes that run ``task`` besides the trainer, in start order (each is
    ``python -m loop_ros.nodes.<name>``): its sim when it has one, then the planner."""
    return (("sim",) if task.has_simulator else ()) + ("planner",)


START_WAIT_S = 10.0
"""Longest wait for ``task.start_subscribers`` before a node starts anyway."""

FINALIZED_LINGER_S = 1.0
"""How long a node finalized through its change_state service goes on spinning before its process
ends: the answer has to reach the caller, and a reliable DDS writer resends a lost sample only while
it exists. (A node that ended at once left the caller without an answer once, on a loaded host:
test_ros_lifecycle's shutdown call; not reproduced on demand.)"""


class StartGate:
    """Holds a node's first step until ``wanted`` subscribers have matched its output publisher
    (and, for the planner, its first state and the model it is loading have arrived).

    DDS discovery between processes started together took up to 2.5 s here, and what a
    publisher sends before a subscriber matched is lost to it: the trainer would miss the
    first ticks. After START_WAIT_S the node starts anyway and logs what it was missing.
    """

    def __init__(self, publisher, log_warning: Callable[[str], None]):
        self.publisher, self._log_warning = publisher, log_warning
        self._created = time.monotonic()
        self.open = False

    def passes(self, wanted: int, missing_input: str | None = None) -> bool:
        """True from the first call at which the node may run, for good; ``missing_input`` names
        what the node still waits for besides subscribers (None: nothing)."""
        if not self.open:
            matched = self.publisher.get_subscription_count()
            waited = time.monotonic() - self._created
            ready = matched >= wanted and missing_input is None
            self.open = ready or waited >= START_WAIT_S
            if self.open and not ready:
                self._log_warning(f"starting after {waited:.0f} s with {matched} of {wanted} subscribers of "
                                  f"{self.publisher.topic_name}" + (f" and no {missing_input} yet" if missing_input else ""))
        return self.open


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a summary."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_node(make_node: Callable[[], object], argv: Sequence[str] | None = None) -> int:
    """Spin the node made by ``make_node`` until SIGINT/SIGTERM, then write its summary.

    Non-ROS arguments: ``--summary FILE``, where the dict ``node.close()`` returns is written
    as JSON on shutdown, and ``--ready FILE``, created once the node is up (with ``autostart``:
    configured and active; else once its lifecycle services exist), for a supervisor that starts
    nodes in order. On shutdown the node goes through the lifecycle's shutdown transition. Our own signal handlers only set a flag, so the node is closed in
    order (worker threads joined, summary written) rather than torn down from inside
    rclpy's handler. Returns the exit code: 0, or 2 when the settings are invalid.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.experimental import EventsExecutor
    from rclpy.signals import SignalHandlerOptions

    from loop_ros.core.config import ConfigError

    argv = list(sys.argv if argv is None else argv)
    arguments = _node_arguments(argv, getattr(make_node, "__doc__", None))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = make_node()
    except ConfigError as error:
        print(f"invalid settings: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    if node.autostart and not started(node):
        print(f"invalid settings: {node.transition_error}", file=sys.stderr)
        node.destroy_node()
        rclpy.try_shutdown()
        return 2
    # Every callback is short (heavy work runs in the nodes' own threads), so one executor
    # thread suffices; rclpy's MultiThreadedExecutor delayed a 50 Hz timer by up to 110 ms
    # (p99 44 ms) on 2 cores while messages flowed, the single-threaded one by < 2 ms.
    executor = EventsExecutor() if node.events_executor else SingleThreadedExecutor()
    executor.add_node(node)
    if arguments.ready:
        Path(arguments.ready).touch()
    finalized_at = None
    try:
        while not stop.is_set() and rclpy.ok():
            if node.lifecycle_state() == "finalized":
                finalized_at = finalized_at or time.monotonic()
                if time.monotonic() - finalized_at > FINALIZED_LINGER_S:
                    break
            try:
                executor.spin_once(timeout_sec=0.1)
            except Exception as error:  # noqa: BLE001 - e.g. rclpy failing to take a message: count, go on
                node.count_callback_error("executor", error)
    finally:
        executor.shutdown(timeout_sec=2.0)
        if node.lifecycle_state() != "finalized":  # (after `ros2 lifecycle set ... shutdown` it is)
            node.trigger_shutdown()  # an active node deactivates first (the planner brakes once)
        summary = {**node.final_summary, "process_cpu_s": time.process_time()}  # every thread's CPU time
        node.destroy_node()
        rclpy.try_shutdown()
    if arguments.summary:
        write_json(arguments.summary, summary)
    return 0


def started(node) -> bool:
    """``autostart``: configure, then activate ``node`` (a ``managed_node.ManagedNode``); False
    when a transition failed (its reason is in ``node.transition_error``)."""
    from rclpy.lifecycle import TransitionCallbackReturn

    return all(transition() == TransitionCallbackReturn.SUCCESS
               for transition in (node.trigger_configure, node.trigger_activate))


def _node_arguments(argv: Sequence[str], description: str | None) -> argparse.Namespace:
    """``--summary FILE`` and ``--ready FILE`` among the non-ROS arguments of ``argv``."""
    from rclpy.utilities import remove_ros_args

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--summary", help="write a JSON summary of the run here on shutdown")
    parser.add_argument("--ready", help="create this file once the node is up")
    return parser.parse_args(remove_ros_args(argv)[1:])

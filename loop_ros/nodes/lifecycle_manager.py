"""Lifecycle manager: brings managed nodes up in order through their lifecycle services, as Nav2's
lifecycle_manager does, then exits (0: every node active; 1: one failed, named on stderr).

Each node, in the order given, is configured (``~/change_state``: configure) and then activated
before the next one is touched, so the trainer records before the sim steps and the sim's world
exists before the planner acts on it. A node already inactive is only activated, one already
active is left alone. Node names resolve like topics: relative to the manager's namespace, so
``--ros-args -r __ns:=/car0`` manages ``/car0/trainer`` and so on.

Run: ``python -m loop_ros.nodes.lifecycle_manager trainer sim planner [--timeout S] [--ros-args ...]``
"""
from __future__ import annotations

import argparse
import sys
import time

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState

SERVICE_WAIT_S = 60.0
"""How long a node may take to appear (its process imports torch or MuJoCo first)."""
TRANSITION_TIMEOUT_S = 120.0
"""How long one transition may take: the trainer's configure loads its whole replay."""


class LifecycleClient:
    """The lifecycle services of one managed node, called from ``node`` spun by ``executor``."""

    def __init__(self, node, executor, name: str):
        self.name, self._executor = name, executor
        self._get = node.create_client(GetState, f"{name}/get_state")
        self._change = node.create_client(ChangeState, f"{name}/change_state")

    def wait(self, timeout_s: float) -> bool:
        return self._get.wait_for_service(timeout_sec=timeout_s) and self._change.wait_for_service(timeout_sec=1.0)

    def state(self, timeout_s: float = 10.0) -> int | None:
        """The node's primary state id (``lifecycle_msgs/State``), None when it did not answer."""
        response = self._call(self._get, GetState.Request(), timeout_s)
        return None if response is None else response.current_state.id

    def transition(self, transition_id: int, timeout_s: float) -> bool:
        response = self._call(self._change, ChangeState.Request(transition=Transition(id=transition_id)), timeout_s)
        return response is not None and response.success

    def _call(self, client, request, timeout_s: float):
        future = client.call_async(request)
        self._executor.spin_until_future_complete(future, timeout_sec=timeout_s)
        return future.result() if future.done() else None


def bring_up(client: LifecycleClient, service_wait_s: float, timeout_s: float) -> str | None:
    """Configure and activate one node; returns why it failed (None: it is active)."""
    if not client.wait(service_wait_s):
        return f"{client.name}: no lifecycle services after {service_wait_s:.0f} s"
    steps = {State.PRIMARY_STATE_UNCONFIGURED: (Transition.TRANSITION_CONFIGURE, "configure"),
             State.PRIMARY_STATE_INACTIVE: (Transition.TRANSITION_ACTIVATE, "activate")}
    while True:
        state = client.state()
        if state == State.PRIMARY_STATE_ACTIVE:
            return None
        if state not in steps:
            return f"{client.name}: in lifecycle state {state}, which cannot be brought up"
        transition, label = steps[state]
        if not client.transition(transition, timeout_s):
            return f"{client.name}: {label} failed or took over {timeout_s:.0f} s (see its log)"


def main(argv=None) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nodes", nargs="+", help="managed node names, in bring-up order")
    parser.add_argument("--timeout", type=float, default=TRANSITION_TIMEOUT_S,
                        help="longest time of one transition, in seconds")
    arguments = parser.parse_args(remove_ros_args(argv)[1:])
    rclpy.init(args=argv)
    node = rclpy.create_node("lifecycle_manager")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        for name in arguments.nodes:
            started = time.monotonic()
            failure = bring_up(LifecycleClient(node, executor, name), SERVICE_WAIT_S, arguments.timeout)
            if failure is not None:
                print(f"lifecycle_manager: {failure}", file=sys.stderr)
                return 1
            node.get_logger().info(f"{name} active after {time.monotonic() - started:.1f} s")
        return 0
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    raise SystemExit(main())

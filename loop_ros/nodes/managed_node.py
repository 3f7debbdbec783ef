"""Managed (lifecycle) nodes: every loop_ros node is an ``rclpy.lifecycle`` node (REP-2002).

The node's parameters are declared (and validated) when it is constructed, so they can be set
before it is configured; the transitions then map to four hooks of the subclass:

- configure (unconfigured -> inactive): ``configure_node()`` reads the parameters, loads and
  verifies what the node needs (model, replay, simulator) and creates its publishers and
  subscriptions. Everything created here is destroyed again at cleanup.
- activate (inactive -> active): the lifecycle publishers are enabled, then ``activate_node()``
  starts the node's work (ticking, stepping, recording).
- deactivate (active -> inactive): ``deactivate_node()`` stops that work (the planner publishes
  the safe action once first), reliable subscribers get up to ``ACK_WAIT_S`` to acknowledge what
  was sent last, then the lifecycle publishers are disabled: nothing goes out on them while the
  node is inactive.
- cleanup (inactive -> unconfigured) and shutdown (from any state): ``close()`` stops the node's
  threads and returns its summary, which ``final_summary`` keeps.

A transition that raises fails (the node stays where it was, with what configure had built torn
down) and is logged with its reason, kept in ``transition_error``; nothing escapes to rclpy, which
would turn it into an unlogged ERROR. The ``autostart`` parameter (default true, as Nav2's
nodes have it) makes ``nodes.run_node`` configure and activate the node itself, so a plain
``ros2 run`` just works; with ``autostart:=false`` a lifecycle manager (``loop-ros up``,
``nodes.lifecycle_manager``, ``ros2 lifecycle set``) drives it through ``~/change_state``.
"""
from __future__ import annotations

import time

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.lifecycle import LifecyclePublisher, LifecycleState, TransitionCallbackReturn

from loop_ros.nodes.guarded_node import GuardedNode

AUTOSTART = "autostart"
ACK_WAIT_S = 1.0
"""How long deactivating waits, at most, for reliable subscribers to acknowledge what was sent last."""


class ManagedNode(GuardedNode):
    """A guarded lifecycle node with ``configure_node`` / ``activate_node`` / ``deactivate_node`` /
    ``close`` hooks (module docstring)."""

    events_executor = False
    """``nodes.run_node`` spins the node with rclpy's (C++) EventsExecutor instead of the
    SingleThreadedExecutor: for a node that takes many messages while its own threads hold the GIL."""

    def __init__(self, node_name: str, **kwargs):
        self._building = False
        self._built: list = []  # entities created by configure_node, destroyed at cleanup
        super().__init__(node_name, **kwargs)
        self.declare_parameter(AUTOSTART, True, ParameterDescriptor(
            description="configure and activate the node at start (false: wait for a lifecycle manager)",
            read_only=True))
        self.configured = False
        self.active = False
        self.transition_error: str | None = None
        self.final_summary: dict = {}

    @property
    def autostart(self) -> bool:
        return bool(self.get_parameter(AUTOSTART).value)

    # ------------------------------------------------------------ the subclass's hooks
    def configure_node(self) -> None:
        raise NotImplementedError

    def activate_node(self) -> None:
        """Start the node's work (its publishers are enabled already)."""

    def deactivate_node(self) -> None:
        """Stop the node's work (its publishers are still enabled)."""

    def close(self) -> dict:
        """Stop the node's threads; returns its summary."""
        return {}

    # ------------------------------------------------------------ rclpy's transition callbacks
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        def configure():
            self._building = True
            try:
                self.configure_node()
            except BaseException:
                self._tear_down()
                raise
            finally:
                self._building = False
            self.configured = True
        return self._transition("configure", configure, lambda: super(ManagedNode, self).on_configure(state))

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        def activate():
            super(ManagedNode, self).on_activate(state)  # enables the lifecycle publishers
            self.active = True  # before the work starts: a worker thread may answer at once
            try:
                self.activate_node()
            except BaseException:
                self.active = False
                super(ManagedNode, self).on_deactivate(state)
                raise
        return self._transition("activate", activate)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("deactivate", lambda: self._deactivate(state))

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("cleanup", self._tear_down)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        def shut_down():
            try:
                if self.active:
                    self._deactivate(state)
            finally:
                self._tear_down()
        return self._transition("shutdown", shut_down)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("error processing", self._tear_down)

    def _deactivate(self, state: LifecycleState) -> None:
        self.active = False
        try:
            self.deactivate_node()
            self._wait_for_acks()
        finally:
            super().on_deactivate(state)  # disables the lifecycle publishers

    def _wait_for_acks(self) -> None:
        """Give reliable subscribers up to ``ACK_WAIT_S`` to take what the node sent last (a sim's
        last states, a planner's safe action): a process that exits right after publishing can take
        samples with it that a busy subscriber (a trainer mid-fit) had not read yet."""
        deadline = time.monotonic() + ACK_WAIT_S
        for entity in self._built:
            if isinstance(entity, LifecyclePublisher):
                left = max(deadline - time.monotonic(), 0.0)
                if not entity.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))):
                    self.get_logger().warning(f"{entity.topic_name}: not every subscriber acknowledged the last "
                                              f"messages within {ACK_WAIT_S} s of deactivating")

    def _tear_down(self) -> None:
        """Stop the threads (keeping the summary) and destroy what configure built."""
        if self.configured:
            self.final_summary = self.close()
        self.configured = False
        built, self._built = self._built, []
        for entity in reversed(built):
            self._destroy(entity)

    def _transition(self, name: str, action, then=None) -> TransitionCallbackReturn:
        try:
            action()
            result = then() if then is not None else TransitionCallbackReturn.SUCCESS
        except Exception as error:  # noqa: BLE001 - a failed transition is reported, never raised into rclpy
            self.transition_error = str(error)
            self.get_logger().error(f"lifecycle transition {name} failed: {error}")
            return TransitionCallbackReturn.FAILURE
        self.transition_error = None
        return result

    # ------------------------------------------------------------ what configure builds is owned
    def _owned(self, entity):
        if self._building:
            self._built.append(entity)
        return entity

    def _destroy(self, entity) -> None:
        destroy = {"Subscription": self.destroy_subscription, "Timer": self.destroy_timer,
                   "LifecyclePublisher": self.destroy_lifecycle_publisher,
                   "Publisher": self.destroy_publisher}
        for kind in type(entity).__mro__:
            if kind.__name__ in destroy:
                destroy[kind.__name__](entity)
                return

    def create_subscription(self, *args, **kwargs):
        return self._owned(super().create_subscription(*args, **kwargs))

    def create_timer(self, *args, **kwargs):
        return self._owned(super().create_timer(*args, **kwargs))

    def create_publisher(self, *args, **kwargs):
        return self._owned(super().create_publisher(*args, **kwargs))

    def create_lifecycle_publisher(self, *args, **kwargs):
        return self._owned(super().create_lifecycle_publisher(*args, **kwargs))

    def lifecycle_state(self) -> str:
        """'unconfigured', 'inactive', 'active' or 'finalized'."""
        return self._state_machine.current_state[1]

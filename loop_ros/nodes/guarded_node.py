"""A ``Node`` none of whose callbacks can raise out of the executor (DESIGN.md 10).

Every subscription, timer and parameter callback a node creates through this class is
wrapped: an exception becomes a count under the callback's name (``callback_errors``, in the
node's summary and diagnostics) and one log line per callback and second at most, and the
node keeps running. A parameter-validation callback that raises refuses the edit with the
error as its reason. The callbacks still decide their own safe fallback; this is the net
below them, so a bug or an input no check foresaw cannot take a node down.
"""
from __future__ import annotations

import functools
import time
from collections import Counter
from typing import Callable

from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode

LOG_PERIOD_S = 1.0
"""At most one log line per failing callback and period."""


class GuardedNode(LifecycleNode):
    """``rclpy.lifecycle.LifecycleNode`` whose callbacks are guarded (module docstring)."""

    def __init__(self, node_name: str, **kwargs):
        self.callback_errors: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}
        self._steady_clock = Clock(clock_type=ClockType.STEADY_TIME)
        super().__init__(node_name, **kwargs)

    def guarded(self, name: str, callback: Callable, on_error: Callable[[Exception], object] = lambda _: None):
        """``callback`` wrapped: an exception is counted under ``name``, logged (rate-limited) and
        answered by ``on_error(exception)``'s return value."""

        @functools.wraps(callback)  # keeps the signature rclpy inspects (message info or not)
        def guarded_callback(*args):
            try:
                return callback(*args)
            except Exception as error:  # noqa: BLE001 - the point: nothing escapes into the executor
                self.count_callback_error(name, error)
                return on_error(error)

        return guarded_callback

    def count_callback_error(self, name: str, error: BaseException) -> None:
        self.callback_errors[name] += 1
        now = time.monotonic()
        if now - self._last_logged.get(name, -LOG_PERIOD_S) >= LOG_PERIOD_S:
            self._last_logged[name] = now
            self.get_logger().error(f"callback {name} failed ({self.callback_errors[name]} times so far), "
                                    f"the node carries on: {error!r}")

    # ------------------------------------------------------------ rclpy's factories, guarded
    def create_subscription(self, msg_type, topic, callback, qos_profile, **kwargs):
        name = f"subscription {topic}"
        return super().create_subscription(msg_type, topic, self.guarded(name, callback), qos_profile, **kwargs)

    def create_timer(self, timer_period_sec, callback, callback_group=None, clock=None, **kwargs):
        """Timers pace work in wall time (steady clock) unless given a clock: with ``use_sim_time``
        the node clock stands still until ``/clock`` comes, and the lock-step sim, which publishes
        ``/clock``, does so from its own timer."""
        name = f"timer {getattr(callback, '__name__', 'callback')}"
        return super().create_timer(timer_period_sec, self.guarded(name, callback), callback_group,
                                    clock or self._steady_clock, **kwargs)

    def add_on_set_parameters_callback(self, callback):
        refuse = lambda error: SetParametersResult(successful=False, reason=f"edit refused: {error!r}")  # noqa: E731
        return super().add_on_set_parameters_callback(self.guarded("parameter validation", callback, refuse))

    def add_post_set_parameters_callback(self, callback):
        return super().add_post_set_parameters_callback(self.guarded("parameter update", callback))

"""Sim node: the task's simulator (``Task.make_env``) stepped once per tick of the wall clock.

Each tick (``task.control_rate_hz``) applies the latest ``action`` (std_msgs/Float64MultiArray;
zero-order hold), steps the env one control step and publishes ``state``: nav_msgs/Odometry
for ``ODOMETRY`` tasks (REP-105: pose in ``odom``, twist in ``base_link``), else the
Float64MultiArray of ``core.array_state`` (the observation, and for a learned reward the step
into it: action, reward, step count, termination). For the RC car a control step lasts one tick (real time); a
gymnasium env's step is its own ``dt``, so it runs faster or slower than real time. Without a
valid action for ``sim.action_timeout_s`` it brakes (the task's safe action). Episodes end
after ``sim.episode_steps`` or on termination; the tick that ends one publishes the terminal
state, the episode's statistics on ``episode`` (std_msgs/String, one JSON object) and the next
episode's first state, both states with the tick's stamp. Parameters: task, safety, sim sections.

Lock-step (``task.lockstep``): simulated time instead. The sim publishes its first state once the
others listen; then at each tick it steps only if the action answering its latest state has come
(an invalid one: the safe action), else it waits, so a slow plan stalls simulated time instead
of missing a deadline; the wall-clock rate stays at most ``task.control_rate_hz``, which the
trainer's recording keeps up with. Each step publishes the next state and ``/clock`` (the env's
time: steps x its control step); states carry that time as their stamp. The planner's answer
names the state it answers (its step count, or for Odometry its stamp; ``nodes.messages.answer``),
so an answer to an episode's terminal state is not taken for the next episode's first state
(Odometry: both carry one stamp, so the last answer with it before the tick is taken). If no
action comes for ``LOCKSTEP_REPUBLISH_S`` it publishes the same state again (counted in
``republished_states``; the trainer drops the repeat).

Run: ``python -m loop_ros.nodes.sim [--summary FILE] --ros-args --params-file config/rc_car.yaml``
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.qos import QoSProfile
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Float64MultiArray, String

from loop_ros.core.config import ConfigError
from loop_ros.core.tasks import make_task
from loop_ros.core.tasks.base import ODOMETRY, NoSimulator
from loop_ros.nodes import StartGate, run_node
from loop_ros.nodes.managed_node import ManagedNode
from loop_ros.nodes.messages import answered_key, array_state, checked_array, odometry_from_pose, state_key
from loop_ros.nodes.node_log import log_at
from loop_ros.nodes.params import ParameterBinding
from loop_ros.workers.priority import PERIODIC_ABOVE, RealtimeThreads

SECTIONS = ("task", "safety", "sim")
FIXED = ("task.name", "task.control_rate_hz", "task.lockstep", "task.realtime_priority")
LOCKSTEP_REPUBLISH_S = 2.0
"""Lock-step: a state that no action has answered for this long is published again (a lost message)."""


@dataclass
class EpisodeStats:
    """Running statistics of one episode (``violations``: steps with cost > 0)."""

    episode: int
    steps: int = 0
    reward: float = 0.0
    cost: float = 0.0
    violations: int = 0
    speed_sum: float = 0.0
    terminated: bool = False

    def add(self, reward: float, cost: float, speed: float) -> None:
        self.steps += 1
        self.reward += reward
        self.cost += cost
        self.violations += cost > 0
        self.speed_sum += speed

    def as_dict(self) -> dict:
        """The ``episode`` message: episode, return, cost, violations, mean_speed, steps, terminated."""
        return {"episode": self.episode, "return": self.reward, "cost": self.cost,
                "violations": int(self.violations), "mean_speed": self.speed_sum / max(self.steps, 1),
                "steps": self.steps, "terminated": self.terminated}


class SimNode(ManagedNode):
    """The task's simulation behind ``state`` / ``action`` topics, as a lifecycle node: configure
    builds the simulator, activate starts stepping it, deactivate pauses it (the world waits)."""

    def __init__(self, node_name: str = "sim"):
        super().__init__(node_name)
        self.params = ParameterBinding(self, SECTIONS, self._on_settings, read_only=FIXED)
        self._step_timer = None

    def configure_node(self) -> None:
        configs = self.params.configs
        self.task = make_task(configs["task"].name)
        try:
            self.env = self.task.make_env(configs["safety"], configs["sim"].episode_steps, seed=configs["task"].seed,
                                          control_dt=1.0 / configs["task"].control_rate_hz)
        except NoSimulator as error:
            raise ConfigError(f"task.name: {error}") from error
        self.safe_action = np.asarray(self.task.safe_action(), dtype=float)
        # The simulated robot keeps its rate beside real-time planners: starved on two cores, the sims
        # stepped at 48.7-49.9 Hz while their planners ticked at 50 (bench/RESULTS.md).
        self.realtime = RealtimeThreads(configs["task"].realtime_priority,
                                        lambda level, text: log_at(self.get_logger(), level, text))
        self._action: np.ndarray | None = None
        self._action_received = -np.inf
        self.braked_ticks = 0
        self.invalid_actions = 0
        self.episodes: list[dict] = []
        self.current = EpisodeStats(episode=0)
        self._total_speed = 0.0
        self._total_steps = 0
        self._first_tick = self._last_tick = 0.0
        self.state_pub = self.create_lifecycle_publisher(
            Odometry if self.task.state_message == ODOMETRY else Float64MultiArray, "state", 10)
        self.start_gate = StartGate(self.state_pub, self.get_logger().warning)
        self.episode_pub = self.create_lifecycle_publisher(String, "episode", 10)
        self.create_subscription(Float64MultiArray, "action", self._on_action, QoSProfile(depth=1))
        self.lockstep = configs["task"].lockstep
        self.republished_states = 0
        self._last_state = None  # lock-step: the state message awaiting its action, and when it went out
        self._last_state_sent = 0.0
        self._answer: np.ndarray | None = None  # lock-step: the action answering the latest state, once it came
        self._awaited_key: int | None = None  # lock-step: the key of that state (nodes.messages.state_key)
        if self.lockstep:
            self.clock_pub = self.create_lifecycle_publisher(Clock, "/clock", 10)
            self._first_obs = self.env.reset(seed=configs["task"].seed)

    def activate_node(self) -> None:
        tick = self._on_lockstep_tick if self.lockstep else self._on_tick
        self._step_timer = self.create_timer(1.0 / self.params.configs["task"].control_rate_hz, tick)

    def deactivate_node(self) -> None:
        self.destroy_timer(self._step_timer)
        self._step_timer = None

    def _on_settings(self, configs: dict) -> None:
        if not self.configured:  # configure reads the parameters as they are then
            return
        # Reference assignments, read by the env at its next step: no edit lands mid-step.
        self.env.safety = configs["safety"]
        self.env.episode_steps = configs["sim"].episode_steps

    def _on_action(self, msg: Float64MultiArray) -> None:
        action = checked_array(msg, len(self.safe_action))
        task = self.task
        if action is not None and (np.any(action < task.action_low) or np.any(action > task.action_high)):
            action = None  # a command beyond the actuator's range is a faulty sender's: not applied
        if action is None:
            self.invalid_actions += 1
            self.get_logger().warning("invalid action (not finite, wrong size or out of bounds): braking",
                                      throttle_duration_sec=1.0)
        self._action = action
        self._action_received = time.monotonic()
        if self.lockstep and self._last_state is not None and answered_key(msg) == self._awaited_key:
            self._answer = self.safe_action if action is None else action  # the answer to the state it waits on

    def _held_action(self, now: float) -> np.ndarray:
        """Zero-order hold of the latest valid action; the safe action once it is too old or invalid."""
        action = self._action
        if action is None or now - self._action_received > self.params.configs["sim"].action_timeout_s:
            self.braked_ticks += 1
            return self.safe_action
        return action

    def _on_tick(self) -> None:
        now = time.monotonic()
        self.realtime.enter(PERIODIC_ABOVE)  # the executor's thread, once, above the planners' planning threads
        if not self.start_gate.passes(self.params.configs["task"].start_subscribers):
            return
        self._step(self._held_action(now), now)

    def _on_lockstep_tick(self) -> None:
        """Lock-step: send the first state once the others listen; step when the answer to the latest
        state has come; send a state again that no action has answered for LOCKSTEP_REPUBLISH_S."""
        now = time.monotonic()
        self.realtime.enter(PERIODIC_ABOVE)
        if self._last_state is None:
            if self.start_gate.passes(self.params.configs["task"].start_subscribers):
                self._publish_state(self._state_message(self._first_obs, self._stamp()), now)
        elif self._answer is not None:
            answer, self._answer = self._answer, None
            self._step(answer, now)
        elif now - self._last_state_sent > LOCKSTEP_REPUBLISH_S:
            self.republished_states += 1
            self.get_logger().warning(f"lock-step: no action for {LOCKSTEP_REPUBLISH_S:.0f} s, sending the state "
                                      "again", throttle_duration_sec=10.0)
            self._publish_state(self._last_state, now)

    def _step(self, action: np.ndarray, now: float) -> None:
        """One control step with ``action``; publishes the state it leads to (and at an episode's end
        its record and the next episode's first state)."""
        obs, reward, cost, terminated, truncated, info = self.env.step(action)
        self.current.add(reward, cost, info["speed"])
        self._total_speed += info["speed"]
        self._total_steps += 1
        stamp = self._stamp()
        if self.lockstep:
            self.clock_pub.publish(Clock(clock=stamp))
        message = self._state_message(obs, stamp, action, reward, terminated)
        if terminated or truncated:
            # The next episode's first state goes out in the same tick with the same stamp (and
            # step 0): the trainer tells the boundary from the message alone (core.replay).
            self.state_pub.publish(message)
            first_obs = self._end_episode(terminated, stamp)
            message = self._state_message(first_obs, stamp)
        self._publish_state(message, now)
        self._first_tick = self._first_tick or now
        self._last_tick = now

    def _publish_state(self, message, now: float) -> None:
        self.state_pub.publish(message)
        self._last_state, self._last_state_sent = message, now
        if self.lockstep:
            self._awaited_key = state_key(message, self.task)

    def _stamp(self):
        """Wall-clock time, or in lock-step the simulated time (steps x the env's control step)."""
        if self.lockstep:
            return Time(nanoseconds=round(self._total_steps * self.env.control_dt * 1e9)).to_msg()
        return self.get_clock().now().to_msg()

    def _state_message(self, obs: np.ndarray, stamp, action=None, reward: float = 0.0, terminated: bool = False):
        """The state message of ``obs``; array states also carry the step into it (``core.array_state``)."""
        if self.task.state_message == ODOMETRY:
            return odometry_from_pose(self.env.pose(), stamp)
        applied = None if action is None else np.clip(action, self.task.action_low, self.task.action_high)
        return array_state(self.task, obs, applied, reward, self.current.steps, terminated)

    def _end_episode(self, terminated: bool, stamp) -> np.ndarray:
        """Publish the episode's record and reset the env; returns the next episode's first observation."""
        self.current.terminated = terminated
        # The terminal state's stamp: the trainer pairs this record with that state, to tell a
        # termination (done) from a time limit (core.replay).
        stats = {**self.current.as_dict(), "stamp_ns": int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec),
                 "wall_time": time.time()}  # when it ended, to line episodes up with the other nodes' events
        self.episodes.append(stats)
        self.episode_pub.publish(String(data=json.dumps(stats)))
        self.current = EpisodeStats(episode=self.current.episode + 1)
        return self.env.reset()

    def summary(self) -> dict:
        """Episodes so far plus the partial current one: returns, violations, mean speed, rates."""
        episodes = self.episodes + ([self.current.as_dict()] if self.current.steps else [])
        span = self._last_tick - self._first_tick
        return {
            "steps": self._total_steps,
            "achieved_hz": (self._total_steps - 1) / span if span > 0 else 0.0,
            "episodes": episodes,
            "episode_returns": [e["return"] for e in episodes],
            "violations": sum(e["violations"] for e in episodes),
            "mean_speed": self._total_speed / max(self._total_steps, 1),
            "braked_ticks": self.braked_ticks,
            "invalid_actions": self.invalid_actions,
            "lockstep": self.lockstep,
            "sim_time_s": self._total_steps * self.env.control_dt,
            "republished_states": self.republished_states,
            "realtime_threads": self.realtime.threads,
            "realtime_refused": self.realtime.refused,
            "callback_errors": dict(self.callback_errors),
        }

    def close(self) -> dict:
        return self.summary()


def main(argv=None) -> int:
    return run_node(SimNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())

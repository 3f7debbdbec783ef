"""Sim node: the task's simulator (``Task.make_env``) stepped once per tick of the wall clock.

Each tick (``task.control_rate_hz``) applies the latest ``action`` (std_msgs/Float64MultiArray;
zero-order hold), steps the env one control step and publishes ``state``: nav_msgs/Odometry
for ``ODOMETRY`` tasks (REP-105: pose in ``odom``, twist in ``base_link``), else the
Float64MultiArray of ``core.array_state`` (the observation, and for a learned reward the step's
reward and the step count). For the RC car a control step lasts one tick (real time); a
gymnasium env's step is its own ``dt``, so it runs faster or slower than real time. Without a
valid action for ``sim.action_timeout_s`` it brakes (the task's safe action). Episodes end
after ``sim.episode_steps`` or on termination; the tick that ends one publishes the terminal
state, the episode's statistics on ``episode`` (std_msgs/String, one JSON object) and the next
episode's first state, both states with the tick's stamp. Parameters: task, safety, sim sections.

Run: ``python -m loop_ros.nodes.sim [--summary FILE] --ros-args --params-file config/rc_car.yaml``
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.qos import QoSProfile
from std_msgs.msg import Float64MultiArray, String

from loop_ros.core.config import ConfigError
from loop_ros.core.tasks import make_task
from loop_ros.core.tasks.base import ODOMETRY, NoSimulator
from loop_ros.nodes import StartGate, run_node
from loop_ros.nodes.guarded_node import GuardedNode
from loop_ros.nodes.messages import array_state, checked_array, odometry_from_pose
from loop_ros.nodes.params import ParameterBinding

SECTIONS = ("task", "safety", "sim")
FIXED = ("task.name", "task.control_rate_hz")


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


class SimNode(GuardedNode):
    """The task's simulation behind ``state`` / ``action`` topics."""

    def __init__(self, node_name: str = "sim"):
        super().__init__(node_name)
        self.params = ParameterBinding(self, SECTIONS, self._on_settings, read_only=FIXED)
        configs = self.params.configs
        self.task = make_task(configs["task"].name)
        try:
            self.env = self.task.make_env(configs["safety"], configs["sim"].episode_steps, seed=configs["task"].seed,
                                          control_dt=1.0 / configs["task"].control_rate_hz)
        except NoSimulator as error:
            raise ConfigError(f"task.name: {error}") from error
        self.safe_action = np.asarray(self.task.safe_action(), dtype=float)
        self._action: np.ndarray | None = None
        self._action_received = -np.inf
        self.braked_ticks = 0
        self.invalid_actions = 0
        self.episodes: list[dict] = []
        self.current = EpisodeStats(episode=0)
        self._total_speed = 0.0
        self._total_steps = 0
        self._first_tick = self._last_tick = 0.0
        self.state_pub = self.create_publisher(Odometry if self.task.state_message == ODOMETRY else Float64MultiArray,
                                               "state", 10)
        self.start_gate = StartGate(self.state_pub, self.get_logger().warning)
        self.episode_pub = self.create_publisher(String, "episode", 10)
        self.create_subscription(Float64MultiArray, "action", self._on_action, QoSProfile(depth=1))
        self.create_timer(1.0 / configs["task"].control_rate_hz, self._on_tick)

    def _on_settings(self, configs: dict) -> None:
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

    def _held_action(self, now: float) -> np.ndarray:
        """Zero-order hold of the latest valid action; the safe action once it is too old or invalid."""
        action = self._action
        if action is None or now - self._action_received > self.params.configs["sim"].action_timeout_s:
            self.braked_ticks += 1
            return self.safe_action
        return action

    def _on_tick(self) -> None:
        now = time.monotonic()
        if not self.start_gate.passes(self.params.configs["task"].start_subscribers):
            return
        obs, reward, cost, terminated, truncated, info = self.env.step(self._held_action(now))
        self.current.add(reward, cost, info["speed"])
        self._total_speed += info["speed"]
        self._total_steps += 1
        stamp = self.get_clock().now().to_msg()
        self.state_pub.publish(self._state_message(obs, reward, stamp))
        if terminated or truncated:
            # The next episode's first state goes out in the same tick with the same stamp (and
            # step 0): the trainer tells the boundary from the message alone (core.replay).
            first_obs = self._end_episode(terminated, stamp)
            self.state_pub.publish(self._state_message(first_obs, 0.0, stamp))
        self._first_tick = self._first_tick or now
        self._last_tick = now

    def _state_message(self, obs: np.ndarray, reward: float, stamp):
        if self.task.state_message == ODOMETRY:
            return odometry_from_pose(self.env.pose(), stamp)
        return array_state(self.task, obs, reward, self.current.steps)

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
            "callback_errors": dict(self.callback_errors),
        }

    def close(self) -> dict:
        return self.summary()


def main(argv=None) -> int:
    return run_node(SimNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Episodes of a task's simulator written as a rosbag2 bag of the messages the ROS stack would have
sent: what ``ros2 bag record /state /action /episode`` captures of ``loop-ros up``, without ROS and
faster than real time (``loop-ros dataset``).

The stream is the sim node's and the planner's (``nodes/sim.py``): at tick k the state s_k
(nav_msgs/Odometry stamped with the tick's time, or the task's array state of ``core.array_state``),
then the planner's action a_k; at the next tick the state it led to. An episode's last tick sends
its terminal state, the ``episode`` record (JSON, with the terminal state's stamp and whether it
``terminated``) and the next episode's first state with the same stamp. Receive times follow the
control rate, with the action ``ACTION_DELAY_NS`` after its state, so ``core.transitions`` pairs
them as it pairs the live stream.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from loop_ros.core.array_state import array_state_values
from loop_ros.core.odometry import odometry_fields
from loop_ros.core.tasks.base import ODOMETRY as TASK_ODOMETRY
from loop_ros.core.transitions import FLOAT_ARRAY, ODOMETRY, STRING, ReplayTopics, typestore

ACTION_DELAY_NS = 2_000_000
"""The planner's answer comes this long after its state (a plan's latency)."""
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
Policy = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""(observation, rng) -> action within the task's bounds; its ``reset()``, where it has one, is called
at each episode's start (a planner's warm start)."""


def _float_array(values) -> object:
    types = typestore().types
    return types[FLOAT_ARRAY](layout=types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
                              data=np.asarray(values, dtype=np.float64))


def _odometry(pose, stamp_ns: int) -> object:
    types, fields = typestore().types, odometry_fields(pose)
    vector, point = types["geometry_msgs/msg/Vector3"], types["geometry_msgs/msg/Point"]
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
        frame_id="odom")
    pose_msg = types["geometry_msgs/msg/Pose"](
        position=point(x=fields["x"], y=fields["y"], z=0.0),
        orientation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=fields["qz"], w=fields["qw"]))
    twist = types["geometry_msgs/msg/Twist"](linear=vector(x=fields["v_long"], y=fields["v_lat"], z=0.0),
                                             angular=vector(x=0.0, y=0.0, z=fields["yaw_rate"]))
    covariance = np.zeros(36, dtype=np.float64)
    return types[ODOMETRY](header=header, child_frame_id="base_link",
                           pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose_msg, covariance=covariance),
                           twist=types["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=covariance))


class EpisodeBagWriter:
    """A bag of one task's episodes in the stack's message stream (module docstring)."""

    def __init__(self, bag: Path, task, control_rate_hz: float, storage: str = "mcap", start_ns: int = 0,
                 topics: ReplayTopics | None = None):
        self.task, self.topics = task, topics or ReplayTopics.for_task(task)
        self.period_ns = int(round(1e9 / control_rate_hz))
        self.now_ns = int(start_ns)
        self._writer = Writer(bag, version=9, storage_plugin=STORAGES[storage])
        self._writer.open()
        self._connections = {topic: self._writer.add_connection(topic, msgtype, typestore=typestore())
                             for topic, msgtype in self.topics.types().items()}
        self.messages = 0
        self.episodes: list[dict] = []  # the records of the finished episodes
        self._tally = {"return": 0.0, "cost": 0.0, "steps": 0}

    def _write(self, topic: str, message, received_ns: int) -> None:
        msgtype = self.topics.types()[topic]
        self._writer.write(self._connections[topic], received_ns, bytes(typestore().serialize_cdr(message, msgtype)))
        self.messages += 1

    def _state(self, obs, pose, stamp_ns: int, received_ns: int, action=None, reward: float = 0.0, step: int = 0,
               terminated: bool = False) -> None:
        if self.task.state_message == TASK_ODOMETRY:
            message = _odometry(pose, stamp_ns)
        else:
            message = _float_array(array_state_values(self.task, obs, action, reward, step, terminated))
        self._write(self.topics.state, message, received_ns)

    def reset(self, obs, pose=None) -> None:
        """An episode's first state (after a reset), stamped with the current tick, sent after
        whatever the tick sent before it (a terminal state, its episode record)."""
        self._state(obs, pose, self.now_ns, self.now_ns + 2)
        self._tally = {"return": 0.0, "cost": 0.0, "steps": 0}

    def step(self, action, obs, pose, reward: float, cost: float, terminated: bool, truncated: bool) -> dict | None:
        """The action answering the current state, then (one tick later) the state it led to; at an
        episode's end also its ``episode`` record, which is returned (call ``reset`` next)."""
        tally = self._tally
        tally.update({"return": tally["return"] + float(reward), "cost": tally["cost"] + float(cost),
                      "steps": tally["steps"] + 1})
        self._write(self.topics.action, _float_array(action), self.now_ns + ACTION_DELAY_NS)
        self.now_ns += self.period_ns
        self._state(obs, pose, self.now_ns, self.now_ns, action, reward, tally["steps"], terminated)
        if not (terminated or truncated):
            return None
        record = {"episode": len(self.episodes), **tally, "terminated": bool(terminated)}
        self.episodes.append(record)
        self._write(self.topics.episode, typestore().types[STRING](data=json.dumps({**record, "stamp_ns": self.now_ns})),
                    self.now_ns + 1)
        return record

    def unfinished(self) -> dict | None:
        """The running episode's tally (cut short by the end of the recording), if it has steps."""
        return {**self._tally, "terminated": False, "cut_short": True} if self._tally["steps"] else None

    def close(self) -> None:
        self._writer.close()


def record_episodes(env, policy: Policy, writer: EpisodeBagWriter, steps: int, rng: np.random.Generator,
                    seed: int = 0) -> list[dict]:
    """Run ``policy`` in ``env`` for ``steps`` environment steps (the last episode cut short where the
    budget ends), writing every message; returns each episode's return, cost, steps and termination."""
    pose = getattr(env, "pose", lambda: None)
    reset_policy = getattr(policy, "reset", lambda: None)
    obs = env.reset(seed=seed)
    writer.reset(obs, pose())
    reset_policy()
    for _ in range(steps):
        action = np.clip(np.asarray(policy(obs, rng), dtype=float), writer.task.action_low, writer.task.action_high)
        obs, reward, cost, terminated, truncated, _ = env.step(action)
        if writer.step(action, obs, pose(), reward, cost, terminated, truncated):
            obs = env.reset()
            writer.reset(obs, pose())
            reset_policy()
    unfinished = writer.unfinished()
    return writer.episodes + ([unfinished] if unfinished else [])

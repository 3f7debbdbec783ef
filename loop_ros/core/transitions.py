"""Recorded messages -> transitions (s, a, r, s', done): ``TransitionAssembler``, the one rule the
trainer applies live and to its bags on load (``core.replay``), so a restarted trainer sees the same data:

* s, s': observations of two consecutive ``state`` messages (``Task.obs_from_pose`` for
  nav_msgs/Odometry, else the observation of the Float64MultiArray, ``core.array_state``);
* a: the newest valid ``action`` received before s' (the sim holds the latest action, so
  this is what it applied, up to the ~1 ms in which both receive a new action);
* r = task.reward(s, a, s'); for a learned reward (``reward_from_model``), the reward the sim
  sent with s' (``core.array_state``);
* done: True only when s' ended its episode by termination (a crash), not by the time
  limit, so the critic bootstraps through a time limit and not through a crash. When an
  episode ends, the sim publishes its terminal state and then the next episode's first
  state, both with the tick's stamp, and an ``episode`` record (JSON) naming the terminal
  state's stamp (``stamp_ns``) and whether it ``terminated``. A state stamped no later than
  the one before it starts a new run; the transition into the terminal state is held until
  its record arrives (the order in which one subscriber takes messages of two topics is
  not guaranteed, so either may come first). A record that never comes leaves it a time
  limit. Every transition is therefore released one state late. Array states that carry
  their step count and termination (``core.array_state``: the gymnasium tasks) need no record:
  step 0 starts a run, s' says whether it ended its episode by termination, and the
  transition is released at once. Plain array states (a robot driver's observation) rely on
  the ``episode`` record alone to end a run.
* no transition spans a gap of more than ``max_gap_s`` between the stamps of s and s'
  (receive times without stamps; for counted array states, a missing step), or an action
  received more than ``max_gap_s`` before s
  (the sim stops holding an action after ``sim.action_timeout_s``). Stamps, not receive
  times, measure the state gap, so a trainer that falls behind for a while (its messages
  arrive late and in a burst) keeps every transition. States that complete no transition
  are counted by reason (``replay_unpaired_*``).
* a message that does not decode, or whose numbers fail ``core.untrusted``'s checks (not
  finite, too large, wrong size, an action out of the task's bounds, an episode record that
  is no JSON object) is rejected: counted (``replay_rejected_<role>``) and never stored. A
  rejected state or episode record is as if it had never been received. A rejected action
  is recorded as an empty one (``no_command``): the sim brakes on either, so the action
  before it pairs with no later state, live and on reload alike.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from rosbags.typesys import Stores, get_typestore

from loop_ros.core.array_state import parse_array_state
from loop_ros.core.odometry import pose_from_odometry
from loop_ros.core.tasks.base import ODOMETRY as TASK_ODOMETRY
from loop_ros.core.tasks.base import Task
from loop_ros.core.untrusted import checked_episode, checked_vector

ODOMETRY = "nav_msgs/msg/Odometry"
FLOAT_ARRAY = "std_msgs/msg/Float64MultiArray"
STRING = "std_msgs/msg/String"
ROLES = ("state", "action", "episode")
MAX_EARLY_RECORDS = 16
"""Episode records kept while their terminal state has not come yet (it comes within a tick)."""

_typestore = None


def typestore():
    """The ROS 2 Kilted message definitions (bytes equal ``rclpy.serialization``'s CDR)."""
    global _typestore
    if _typestore is None:
        _typestore = get_typestore(Stores.ROS2_KILTED)
    return _typestore


@dataclass(frozen=True)
class ReplayTopics:
    """Resolved topic names of the three roles and the state's message type."""

    state: str = "/state"
    action: str = "/action"
    episode: str = "/episode"
    state_type: str = ODOMETRY

    @classmethod
    def for_task(cls, task: Task, state: str = "/state", action: str = "/action",
                 episode: str = "/episode") -> ReplayTopics:
        """Topic names as given; the state type is the task's (``Task.state_message``)."""
        return cls(state, action, episode, ODOMETRY if task.state_message == TASK_ODOMETRY else FLOAT_ARRAY)

    def types(self) -> dict[str, str]:
        """topic -> message type, in role order."""
        return {self.state: self.state_type, self.action: FLOAT_ARRAY, self.episode: STRING}

    def role(self, topic: str) -> str | None:
        return {self.state: "state", self.action: "action", self.episode: "episode"}.get(topic)

    @classmethod
    def of_recorded(cls, task: Task, topic: str, msgtype: str) -> ReplayTopics | None:
        """The stream a recorded ``<namespace>/<role>`` topic of ``msgtype`` belongs to (another
        robot's, e.g. ``/car1/state``), or None when it is no role of ``task``'s streams."""
        namespace, _, role = topic.rpartition("/")
        stream = cls.for_task(task, *(f"{namespace}/{name}" for name in ROLES))
        return stream if stream.types().get(topic) == msgtype else None


# ---------------------------------------------------------------- messages -> transitions


def _decoded(data: bytes, msgtype: str):
    try:
        return typestore().deserialize_cdr(data, msgtype)
    except Exception:  # rosbags raises assorted errors on malformed CDR
        return None


@dataclass(frozen=True)
class Transition:
    s: np.ndarray  # (S,)
    a: np.ndarray  # (A,)
    r: float
    s2: np.ndarray  # (S,)
    done: bool


def no_command() -> bytes:
    """CDR of an empty Float64MultiArray on ``action``: no command. A rejected action is recorded
    as this (the sim brakes on both, so the action before it was not applied after it)."""
    ts = typestore()
    msg = ts.types[FLOAT_ARRAY](layout=ts.types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
                                data=np.zeros(0, np.float64))
    return bytes(ts.serialize_cdr(msg, FLOAT_ARRAY))


def states_carry_transitions(task: Task) -> bool:
    """Array states that carry the step into them (action, reward, count, termination) need no
    action or episode message of another publisher to complete a transition."""
    return {"action", "reward", "step", "terminated"} <= set(task.state_extras)


@dataclass(frozen=True)
class Fed:
    """What one message did: ``valid`` False when it was rejected (it must not be stored), and
    the transitions it released."""

    valid: bool
    transitions: tuple[Transition, ...] = ()


class TransitionAssembler:
    """Turns the recorded message stream, in receive order, into transitions (module docstring).

    A transition is released one state late: only the state after s' (or the episode record)
    tells whether s' ended an episode, and how.
    """

    def __init__(self, task: Task, topics: ReplayTopics, max_gap_s: float):
        self.task, self.topics = task, topics
        self.self_describing = states_carry_transitions(task)
        self.max_gap_ns = int(max_gap_s * 1e9)
        self._state: _StateRecord | None = None
        self._action: tuple[np.ndarray, int] | None = None  # (action, receive time)
        self._pending: Transition | None = None  # the newest transition, not yet released
        self._pending_end: int | None = None  # the stamp of its s'
        self._awaiting_record = False  # its s' ended an episode whose record has not come yet
        self._ended: dict[int, bool] = {}  # terminal stamp -> terminated, of records that came before their state
        self.unpaired: Counter[str] = Counter()  # states that completed no transition, by reason
        self.rejected: Counter[str] = Counter()  # messages refused (never stored), by role
        self.terminal_transitions = 0  # released with done (their s' ended an episode by termination)

    def feed(self, topic: str, timestamp_ns: int, data: bytes) -> Fed:
        """One received (or recorded) message. A message that does not decode or whose numbers
        fail ``core.untrusted``'s checks is rejected: counted, and as if never received."""
        role = self.topics.role(topic)
        if role == "episode":
            msg = _decoded(data, STRING)
            record = None if msg is None else checked_episode(msg.data)
            return self._rejected(role) if record is None else Fed(True, self._on_episode(record))
        if role == "action":
            msg = _decoded(data, FLOAT_ARRAY)
            if msg is not None and len(msg.data) == 0:  # no command (or a rejected one, recorded as that)
                self._action = None
                return Fed(True)
            action = None if msg is None else checked_vector(msg.data, self.task.act_dim)
            low, high = np.asarray(self.task.action_low), np.asarray(self.task.action_high)
            if action is None or np.any(action < low) or np.any(action > high):
                self._action = None  # the sim brakes on it: no transition pairs with the action before it
                return self._rejected(role)
            self._action = (action, timestamp_ns)
            return Fed(True)
        if role == "state":
            state = self._state_record(data, timestamp_ns)
            return self._rejected(role) if state is None else Fed(True, self._on_state(state))
        return self._rejected("unknown_topic")

    def finish(self) -> tuple[Transition, ...]:
        """The stream has ended (a dataset's last message): the transition held for the next state
        is released, its s' a time limit (a record still to come never will)."""
        return self._release(False) if self._pending is not None else ()

    def _rejected(self, role: str) -> Fed:
        self.rejected[role] += 1
        return Fed(False)

    def _state_record(self, data: bytes, received: int) -> _StateRecord | None:
        msg = _decoded(data, self.topics.state_type)
        if msg is None:
            return None
        if self.topics.state_type == FLOAT_ARRAY:
            state = parse_array_state(msg.data, self.task)
            if state is None:
                return None
            return _StateRecord(state.obs, received, received, state.step, state.reward, state.terminated,
                                state.action)
        pose = pose_from_odometry(msg)
        if pose is None:
            return None
        obs = checked_vector(self.task.obs_from_pose(*pose), self.task.obs_dim)
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        return None if obs is None else _StateRecord(obs, received, stamp, stamp)

    def _unpaired_reason(self, state: _StateRecord) -> str | None:
        previous, action = self._state, self._action
        if previous is None:
            return "no_previous"
        if state.time <= previous.time:
            return "episode_start"  # the sim's reset state carries its terminal state's stamp
        if state.time - previous.time > self.max_gap_ns:
            return "state_gap"
        if action is None:
            return "no_action"
        if previous.received - action[1] > self.max_gap_ns:
            return "action_gap"  # the action was old before s: the sim had stopped holding it
        return None

    def _on_state(self, state: _StateRecord) -> tuple[Transition, ...]:
        if self._is_repeat(state):  # a lock-step sim sent its unanswered state again
            return self._count_unpaired("repeat")
        if self.self_describing:
            return self._on_described_state(state)
        reason = self._unpaired_reason(state)
        previous, self._state = self._state, state
        if reason == "episode_start" and self._pending is not None and not self._awaiting_record:
            terminated = self._ended.pop(self._pending_end, None)
            if terminated is None:  # its record is still on its way: hold the transition for it
                self._awaiting_record = True
                self.unpaired[reason] += 1
                return ()
            return self._release(terminated) + self._count_unpaired(reason)
        released = self._release(False) if self._pending is not None else ()
        if reason is not None:
            return released + self._count_unpaired(reason)
        reward = state.reward if self.task.reward_from_model else self.task.reward(previous.obs, self._action[0],
                                                                                   state.obs)
        if reward is None:  # a learned-reward task's state without its reward: nothing to learn it from
            return released + self._count_unpaired("no_reward")
        self._pending = Transition(previous.obs, self._action[0], float(reward), state.obs, False)
        self._pending_end = state.key
        return released

    def _on_described_state(self, state: _StateRecord) -> tuple[Transition, ...]:
        """A state that carries the step into it: a transition from the state before, released at
        once, unless it starts an episode (step 0) or a step is missing between them."""
        previous, self._state = self._state, state
        if previous is None:
            return self._count_unpaired("no_previous")
        if state.key == 0:
            return self._count_unpaired("episode_start")
        if state.key != previous.key + 1:
            return self._count_unpaired("state_gap")
        self.terminal_transitions += bool(state.terminated)
        return (Transition(previous.obs, state.action, state.reward, state.obs, bool(state.terminated)),)

    def _is_repeat(self, state: _StateRecord) -> bool:
        previous = self._state
        return (previous is not None and state.key is not None and state.key == previous.key
                and np.array_equal(state.obs, previous.obs))

    def _count_unpaired(self, reason: str) -> tuple:
        self.unpaired[reason] += 1
        return ()

    def _on_episode(self, record: dict) -> tuple[Transition, ...]:
        """An episode record: the sim says whether its episode ended by termination (a crash: done)
        or by the time limit (not done), and names the terminal state by its stamp."""
        terminated = record.get("terminated") is True
        if self.self_describing:  # the states said it all
            return ()
        if self.task.state_message != TASK_ODOMETRY:  # plain array states: the record itself is the boundary
            self._state = None
            return self._release(terminated) if self._pending is not None else ()
        key = record.get("stamp_ns")
        if not isinstance(key, int) or isinstance(key, bool):
            return ()  # a record without the stamp (an older sim's): the end stays a time limit
        if self._pending is not None and self._pending_end == key:
            return self._release(terminated)
        self._ended[key] = terminated  # came before its terminal state
        while len(self._ended) > MAX_EARLY_RECORDS:
            self._ended.pop(next(iter(self._ended)))
        return ()

    def _release(self, done: bool) -> tuple[Transition, ...]:
        """The pending transition, with ``done`` when its s' ended an episode by termination."""
        transition, self._pending, self._pending_end = self._pending, None, None
        self._awaiting_record = False
        if done:
            self.terminal_transitions += 1
            transition = Transition(transition.s, transition.a, transition.r, transition.s2, True)
        return (transition,)


@dataclass(frozen=True)
class _StateRecord:
    obs: np.ndarray  # (S,)
    received: int  # receive time, ns since the epoch
    time: int  # the sender's stamp (ns) when the message has one, else the receive time
    key: int | None = None  # the stamp (what an episode record names its terminal state by), or the step count
    reward: float | None = None  # of the step into this state, when the sim sends it
    terminated: bool | None = None  # it ended its episode by termination, when the sim sends it
    action: np.ndarray | None = None  # the action applied in the step into it, when the sim sends it

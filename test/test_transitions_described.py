"""Transitions from array states that carry the step into them (``core.array_state``: the gymnasium
tasks): each state completes a transition by itself, with the action the sim applied, its reward and
its termination, whatever order the ``action`` and ``episode`` messages of other publishers come in."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
from rclpy.serialization import serialize_message  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from loop_ros.core.tasks import make_task  # noqa: E402
from loop_ros.core.transitions import ReplayTopics, TransitionAssembler  # noqa: E402
from loop_ros.nodes.messages import array_state, float_array  # noqa: E402

TASK = make_task("gym:InvertedPendulum-v5")
TOPICS = ReplayTopics.for_task(TASK)


def obs(i: int) -> np.ndarray:
    return np.full(TASK.obs_dim, 0.01 * i)


def feed(assembler: TransitionAssembler, messages) -> list:
    out = []
    for t, (topic, data) in enumerate(messages):
        fed = assembler.feed(topic, 1_000_000 * (t + 1), data)
        assert fed.valid
        out += fed.transitions
    return out


def state(i: int, step: int, action=None, reward: float = 0.0, terminated: bool = False) -> tuple[str, bytes]:
    return TOPICS.state, serialize_message(array_state(TASK, obs(i), action, reward, step, terminated))


def test_each_state_completes_its_transition_with_the_action_the_sim_applied():
    assembler = TransitionAssembler(TASK, TOPICS, max_gap_s=0.2)
    # A planner's action arriving late, or not at all, or for another step, does not matter.
    messages = [state(0, 0), (TOPICS.action, serialize_message(float_array([2.0]))),
                state(1, 1, [0.5], 1.0), state(2, 2, [-0.25], 1.0, terminated=True),
                (TOPICS.episode, serialize_message(String(data='{"episode": 0, "terminated": true, "steps": 2}'))),
                state(3, 0), state(4, 1, [3.0], 1.0), state(5, 2, [0.0], 1.0), state(6, 0)]
    transitions = feed(assembler, messages)
    assert [(t.a[0], t.r, t.done) for t in transitions] == [(0.5, 1.0, False), (-0.25, 1.0, True),
                                                           (3.0, 1.0, False), (0.0, 1.0, False)]
    np.testing.assert_array_equal(transitions[1].s, obs(1))
    np.testing.assert_array_equal(transitions[1].s2, obs(2))
    assert assembler.terminal_transitions == 1 and assembler.unpaired["episode_start"] == 2


def test_a_missing_step_and_a_repeated_state_complete_no_transition():
    assembler = TransitionAssembler(TASK, TOPICS, max_gap_s=0.2)
    messages = [state(0, 0), state(1, 1, [0.5], 1.0), state(1, 1, [0.5], 1.0),  # the lock-step sim's repeat
                state(3, 3, [0.1], 1.0),  # step 2 was lost
                state(4, 4, [0.2], 1.0)]
    transitions = feed(assembler, messages)
    assert [t.a[0] for t in transitions] == [0.5, 0.2]
    assert assembler.unpaired["repeat"] == 1 and assembler.unpaired["state_gap"] == 1


def test_a_state_with_a_bad_extra_is_rejected():
    assembler = TransitionAssembler(TASK, TOPICS, max_gap_s=0.2)
    good = array_state(TASK, obs(1), [0.5], 1.0, 1, False)
    for index, value in ((TASK.obs_dim, 99.0), (TASK.obs_dim + 2, 1.5), (TASK.obs_dim + 3, 0.5)):
        bad = list(good.data)
        bad[index] = value  # action out of bounds, a step that is no count, a termination not 0/1
        msg = float_array(bad)
        assert not assembler.feed(TOPICS.state, 1, serialize_message(msg)).valid
    assert assembler.rejected["state"] == 3

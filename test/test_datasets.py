"""Offline datasets: bags written as ``ros2 bag record`` writes them (``core.recording``), and the
trainer's own replay, read into the transitions the trainer forms (``core.datasets``); bad datasets
are refused with one line."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from loop_ros import cli
from loop_ros.core.config import SafetyConfig, TrainerConfig
from loop_ros.core.datasets import DatasetError, load_dataset, load_datasets
from loop_ros.core.recording import EpisodeBagWriter, record_episodes
from loop_ros.core.replay import ReplayBuffer
from loop_ros.core.tasks import make_task
from loop_ros.core.transitions import ReplayTopics, typestore

MAX_GAP_S = 0.2


class LoggedEnv:
    """The task's env, keeping each step as the transition the trainer should form from it."""

    def __init__(self, task, episode_steps: int):
        self.env = task.make_env(SafetyConfig(), episode_steps, seed=0)
        self.task, self.steps = task, []
        self._obs = None
        if hasattr(self.env, "pose"):
            self.pose = self.env.pose

    def reset(self, seed=None):
        self._obs = self.env.reset(seed=seed)
        return self._obs

    def step(self, action):
        obs, reward, cost, terminated, truncated, info = self.env.step(action)
        self.steps.append((self._obs, np.asarray(action, float), reward, obs, terminated))
        self._obs = obs
        return obs, reward, cost, terminated, truncated, info


def record(tmp_path, task, steps: int = 300, storage: str = "mcap", episode_steps: int = 120, name: str = "bag"):
    env = LoggedEnv(task, episode_steps)
    writer = EpisodeBagWriter(tmp_path / name, task, 50.0, storage)
    episodes = record_episodes(env, lambda obs, rng: rng.uniform(task.action_low, task.action_high), writer, steps,
                               np.random.default_rng(0))
    writer.close()
    return env.steps, episodes


@pytest.mark.parametrize("task_name, storage, steps, episode_steps", [
    ("rc_car", "mcap", 1000, 500), ("gym:Hopper-v5", "sqlite3", 300, 120), ("point_mass", "sqlite3", 300, 120)])
def test_a_recorded_bag_loads_into_the_transitions_of_the_run(tmp_path, task_name, storage, steps, episode_steps):
    """Odometry states (the pose round trip; terminations from the episode records), self-describing
    array states (Hopper) and plain array states with episode records: every step is one transition,
    done only on termination (random driving crashes the car, random torques make the hopper fall)."""
    task = make_task(task_name)
    steps, episodes = record(tmp_path, task, steps, storage=storage, episode_steps=episode_steps)
    dataset = load_dataset(task, tmp_path, ReplayTopics.for_task(task), MAX_GAP_S)
    assert len(dataset) == len(steps)
    s, a, r, s2, d = (np.array(x) for x in zip(*steps))
    np.testing.assert_allclose(dataset.arrays["s"], s, atol=1e-5)
    np.testing.assert_allclose(dataset.arrays["a"], a, atol=1e-6)
    np.testing.assert_allclose(dataset.arrays["s2"], s2, atol=1e-5)
    np.testing.assert_allclose(dataset.arrays["r"], r, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(dataset.arrays["d"], d.astype(np.float32))
    assert dataset.arrays["d"].sum() == sum(e["terminated"] for e in episodes)
    assert dataset.arrays["d"].sum() > 0 or task_name == "point_mass"  # it never terminates


def test_a_ros2_bag_and_the_trainers_replay_of_the_same_stream_give_the_same_transitions(tmp_path):
    task = make_task("rc_car")
    record(tmp_path / "ros2bag", task, storage="sqlite3")
    topics = ReplayTopics.for_task(task)
    replay = ReplayBuffer(TrainerConfig(data_dir=str(tmp_path / "replay")), task, topics, lambda level, text: None)
    reader = Reader(tmp_path / "ros2bag" / "bag")
    reader.open()
    live = [t for c, timestamp, data in reader.messages() for t in replay.record(c.topic, timestamp, bytes(data))]
    reader.close()
    replay.close()
    from_ros2_bag = load_dataset(task, tmp_path / "ros2bag", topics, MAX_GAP_S)
    from_replay = load_dataset(task, tmp_path / "replay", topics, MAX_GAP_S)
    assert len(live) == len(from_ros2_bag) - 1  # the trainer holds the last one for the next state
    for key in ("s", "a", "r", "s2", "d"):
        np.testing.assert_array_equal(from_replay.arrays[key], from_ros2_bag.arrays[key])
    np.testing.assert_allclose(from_replay.arrays["s2"][:-1], np.stack([t.s2 for t in live]), atol=1e-6)
    both = load_datasets(task, [tmp_path / "ros2bag", tmp_path / "replay"], topics, MAX_GAP_S)
    assert len(both) == 2 * len(from_ros2_bag) and len(both.sources) == 2
    assert both.sources[0]["sha256"] != both.sources[1]["sha256"]  # two encodings of one stream


def _bag_of(tmp_path, task, messages, state_type=None):
    """A bag of (topic, receive ns, message) as ``ros2 bag record`` would write it."""
    topics = ReplayTopics.for_task(task)
    types = {**topics.types(), **({topics.state: state_type} if state_type else {}),
             "/cmd": "std_msgs/msg/Float64MultiArray"}
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {topic: writer.add_connection(topic, msgtype, typestore=typestore())
                       for topic, msgtype in types.items() if any(m[0] == topic for m in messages)}
        for topic, timestamp, message in messages:
            data = typestore().serialize_cdr(message, types[topic])
            writer.write(connections[topic], timestamp, bytes(data))
    return tmp_path


def _array(values):
    types = typestore().types
    return types["std_msgs/msg/Float64MultiArray"](layout=types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
                                                  data=np.asarray(values, dtype=np.float64))


POINT_MASS = make_task("point_mass")


def _point_mass_stream(state_values):
    """States of ``state_values`` 20 ms apart, each answered by an action."""
    stream = []
    for i, values in enumerate(state_values):
        stream += [("/state", 20_000_000 * i, _array(values)), ("/action", 20_000_000 * i + 2, _array([0.1, 0.2]))]
    return stream


BAD = {
    "empty directory": (lambda tmp: tmp, "no rosbag2 bag"),
    "unfinished bag": (lambda tmp: (_bag_of(tmp, POINT_MASS, _point_mass_stream([[0.0] * 4] * 3)) / "bag" /
                                    "metadata.yaml").unlink() or tmp, "has no metadata.yaml"),
    "no state messages": (lambda tmp: _bag_of(tmp, POINT_MASS, [("/action", 1, _array([0.0, 0.0]))]),
                          "no messages on /state"),
    "other topics only": (lambda tmp: _bag_of(tmp, POINT_MASS, [("/cmd", 1, _array([0.0]))]),
                          "no messages on /state, /action"),
    "no action messages": (lambda tmp: _bag_of(tmp, POINT_MASS, [("/state", 1, _array([0.0] * 4))]),
                           "no messages on /action"),
    "wrong state size": (lambda tmp: _bag_of(tmp, POINT_MASS, _point_mass_stream([[0.0] * 5] * 3)),
                         "fail the checks for task point_mass"),
    "NaN state": (lambda tmp: _bag_of(tmp, POINT_MASS, _point_mass_stream([[0.0] * 4, [math.nan] * 4, [0.0] * 4])),
                  "{'state': 1}"),
    "wrong state type": (lambda tmp: _bag_of(tmp, POINT_MASS, [("/state", 1, typestore().types[
        "std_msgs/msg/String"](data="x"))], state_type="std_msgs/msg/String"), "is std_msgs/msg/String"),
    "one state: no transition": (lambda tmp: _bag_of(tmp, POINT_MASS, _point_mass_stream([[0.0] * 4])),
                                 "0 transitions form from its 1 states"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_dataset_is_refused_with_one_line(tmp_path, case):
    make, message = BAD[case]
    with pytest.raises(DatasetError, match="dataset .*" + message.replace("[", r"\[").replace("{", r"\{")) as error:
        load_dataset(POINT_MASS, make(tmp_path), ReplayTopics.for_task(POINT_MASS), MAX_GAP_S)
    assert "\n" not in str(error.value)


def test_the_offline_command_exits_2_with_one_line_on_a_bad_dataset(tmp_path, capsys):
    assert cli.main(["offline", "--task", "point_mass", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("loop-ros offline: dataset ") and "\n" not in err
    assert cli.main(["offline", "--task", "point_mass", "--data", str(tmp_path / "nowhere"),
                     "--out", str(tmp_path / "o")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_the_dataset_command_records_a_bag_and_states_its_returns(tmp_path, capsys):
    out = tmp_path / "random"
    assert cli.main(["dataset", "--task", "point_mass", "--policy", "random", "--steps", "120",
                     "--out", str(out), "--storage", "sqlite3"]) == 0
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["episodes"] == 3 and len(summary["per_episode"]) == 3  # point_mass episodes are 50 steps
    assert summary["mean_return"] == pytest.approx(np.mean([e["return"] for e in summary["per_episode"][:2]]))
    assert len(load_dataset(POINT_MASS, out, ReplayTopics.for_task(POINT_MASS), MAX_GAP_S)) == 120
    assert cli.main(["dataset", "--task", "point_mass", "--steps", "10", "--out", str(out)]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err

"""Trainer node: LOOP learns online from the running loop and hot-swaps its models into the planner.

Topics: subscribes ``state``, ``action`` and ``episode`` as raw CDR bytes (for a fleet,
``<robot>/state`` and so on for each namespace of ``trainer.robots``); publishes ``model`` (each robot's)
(std_msgs/UInt8MultiArray holding bundle bytes; reliable, transient_local, depth 1, so a
planner started later still gets the newest) and ``/diagnostics``. Every message received
is recorded into rosbag2 bags in ``trainer.data_dir`` (``core.replay``, bytes as received),
and the transitions rebuilt from them go to the learning thread (``training_worker``), which
drives the same ``LoopTrainer`` as ``loop-ros train``. At start every bag in ``data_dir``
is loaded first, after the learner state the last run saved there (``core.learner_state``:
a restarted trainer goes on learning where it stopped). Each published bundle is signed with
``security.signing_key`` (Ed25519, ``core.signing``), and its version is above both the last
one published from ``data_dir`` and the planner's starting bundle (``task.bundle``): a planner
refuses a model that is not newer than its own. With ``trainer.gate_episodes``, each model first
drives the task's simulator as the planner would (its controller, arc and safety settings, on ONNX
Runtime with ``trainer.torch_threads`` threads) and is published only if it drives at least as well
as the planner's starting bundle (``core.model_gate``). Parameters: the task, arc, safety, ensemble, sac,
trainer and security sections, read at start (all read-only).

Run: ``python -m loop_ros.nodes.trainer [--summary FILE] --ros-args --params-file config/rc_car.yaml``
"""
from __future__ import annotations

import dataclasses
import json
import time
from functools import partial
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray

from loop_ros.core.bundle import MANIFEST
from loop_ros.core.config import ConfigError, RuntimeConfig, controller_safety
from loop_ros.core.learner_state import STATE_FILE
from loop_ros.core.model_gate import ModelGate
from loop_ros.core.params_file import flatten
from loop_ros.core.replay import ReplayBuffer
from loop_ros.core.transitions import FLOAT_ARRAY, ODOMETRY, ROLES, STRING, ReplayTopics
from loop_ros.core.signing import key_id, load_private_key, sign_bundle_bytes
from loop_ros.core.tasks import make_task
from loop_ros.core.tasks.base import NoSimulator
from loop_ros.core.trainer import LoopTrainer, set_torch_threads
from loop_ros.nodes import run_node
from loop_ros.nodes.managed_node import ManagedNode
from loop_ros.settings import bundle_path
from loop_ros.nodes.messages import diagnostics
from loop_ros.nodes.node_log import log_at
from loop_ros.nodes.params import ParameterBinding
from loop_ros.workers.priority import lower_process_priority
from loop_ros.workers.training_worker import TrainingWorker

SECTIONS = ("task", "arc", "safety", "ensemble", "sac", "trainer", "security")
DIAGNOSTICS_PERIOD_S = 1.0
RECORD_QOS = QoSProfile(depth=100)  # reliable like the publishers; room for a slow executor turn
MODEL_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
MESSAGE_CLASSES = {ODOMETRY: Odometry, FLOAT_ARRAY: Float64MultiArray, STRING: String}


def status_name(node_name: str) -> str:
    """Name of the node's DiagnosticStatus, e.g. ``/trainer: training``."""
    return f"{node_name}: training"


def published_version(bundle_dir: Path) -> int:
    """Version of the bundle a previous run left in ``bundle_dir`` (0: none)."""
    try:
        return int(json.loads((bundle_dir / MANIFEST).read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def first_version(bundle_dir: Path, planner_bundle: Path | None) -> int:
    """The lowest version the trainer may publish: above the last one it published into
    ``bundle_dir`` and above the planner's starting bundle (``task.bundle``), which would
    otherwise refuse the trainer's first models as not newer than its own."""
    return max(published_version(bundle_dir), published_version(planner_bundle) if planner_bundle else 0) + 1


class TrainerNode(ManagedNode):
    """Records the loop into the replay bags and learns from it in a thread, as a lifecycle node:
    configure loads the signing key and the replay, activate starts recording and learning,
    deactivate stops recording and publishing (the learning thread goes on with what it has)."""

    # Measured with two robots (300 messages/s) and small networks, whose training holds the
    # GIL most of the time: with the SingleThreadedExecutor the recording fell 16 s behind and
    # 26 % of the states never reached the replay; with the EventsExecutor none was lost.
    events_executor = True

    def __init__(self, node_name: str = "trainer"):
        super().__init__(node_name)
        self.params = ParameterBinding(self, SECTIONS, lambda configs: None)
        # Every trainer setting is fixed at start: any edit is refused.
        self.add_on_set_parameters_callback(
            lambda _: SetParametersResult(successful=False, reason="trainer settings are fixed at start"))
        self._learning = False
        # Once per process (nice adds up): configure may run again after a cleanup.
        lower_process_priority(self.params.configs["trainer"].nice)
        set_torch_threads(self.params.configs["trainer"].torch_threads)

    def configure_node(self) -> None:
        configs = self.params.configs
        self.signing_key = self._load_signing_key(configs["security"].signing_key)
        schedule = configs["trainer"]
        task = make_task(configs["task"].name)
        robots = schedule.robots or ("",)  # a fleet's namespaces, else the trainer's own topics
        streams = [ReplayTopics.for_task(task, *(self.resolve_topic_name(f"{robot}/{role}".lstrip("/")) for role in ROLES))
                   for robot in robots]
        self.replay = ReplayBuffer(schedule, task, streams, self._log)
        self.publications: list[dict] = []  # when each model went out (wall time), and the learner's state then
        self.worker = self._make_worker(task, configs)
        self.worker.resume()
        self._load_replay()
        self.model_pubs = [self.create_lifecycle_publisher(UInt8MultiArray, f"{robot}/model".lstrip("/"), MODEL_QOS)
                           for robot in robots]
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        for stream in streams:
            for topic, msgtype in stream.types().items():
                self.create_subscription(MESSAGE_CLASSES[msgtype], topic, partial(self._on_message, topic), RECORD_QOS,
                                         raw=True)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)

    def activate_node(self) -> None:
        if not self._learning:  # one learning thread per configure; a pause does not end it
            self.worker.start()
            self._learning = True

    def _load_signing_key(self, path: str):
        """The Ed25519 private key that signs each published bundle; None (with a warning) when
        ``security.signing_key`` is empty. A bad key file is a ConfigError (exit 2)."""
        if not path:
            self.get_logger().warning("security.signing_key is empty: models are published unsigned, and "
                                      "planners refuse unsigned models")
            return None
        key = load_private_key(path, "security.signing_key")
        self.get_logger().info(f"signing published models with key {key_id(key)} ({path})")
        return key

    def _make_worker(self, task, configs: dict) -> TrainingWorker:
        safe = controller_safety(configs["task"].controller, configs["safety"]).enabled
        seed = configs["task"].seed
        trainer = LoopTrainer(task, configs["arc"], configs["safety"], configs["ensemble"], configs["sac"],
                              "safe-loop" if safe else "loop", seed, schedule=configs["trainer"])
        bundle_dir = self.replay.data_dir / "bundle"
        provenance = {"command": f"trainer node {self.get_fully_qualified_name()} (online, ROS)", "seed": seed,
                      "eval_return": None, "data_dir": str(self.replay.data_dir),
                      "settings": {s: dataclasses.asdict(configs[s]) for s in SECTIONS if s != "security"}}
        planner_bundle = bundle_path(task, {"task.bundle": configs["task"].bundle})
        return TrainingWorker(trainer, configs["trainer"], bundle_dir, self._publish_model, self._log, provenance,
                              first_version=first_version(bundle_dir, planner_bundle),
                              state_path=self.replay.data_dir / STATE_FILE, gate=self._make_gate(task, configs, planner_bundle))

    @staticmethod
    def _make_gate(task, configs: dict, planner_bundle: Path | None) -> ModelGate | None:
        """``trainer.gate_episodes``: the gate each model passes before it is published, None when off."""
        schedule = configs["trainer"]
        if not schedule.gate_episodes:
            return None
        runtime = RuntimeConfig(intra_op_threads=schedule.torch_threads)  # the trainer's host, its share of the CPU
        params = flatten({"arc": configs["arc"], "safety": configs["safety"], "runtime": runtime})
        try:
            return ModelGate(task, configs["task"].controller, params, schedule.gate_episodes,
                             schedule.gate_return_tolerance, configs["task"].seed, planner_bundle)
        except NoSimulator as error:
            raise ConfigError(f"trainer.gate_episodes: {error}; set it to 0") from error

    def _load_replay(self) -> None:
        """Every transition of the bags in data_dir, before any new message is recorded."""
        started = time.perf_counter()
        for transition in self.replay.load():
            self.worker.add_loaded(transition)
        self.get_logger().info(f"replay: {self.replay.transitions} transitions ({self.replay.loaded_messages} "
                               f"messages) loaded from {self.replay.data_dir} in {time.perf_counter() - started:.2f} s")

    # ------------------------------------------------------------ callbacks (executor thread)
    def _on_message(self, topic: str, data: bytes) -> None:
        if not self.active:  # an inactive trainer records nothing
            return
        for transition in self.replay.record(topic, time.time_ns(), data):
            self.worker.offer(transition)

    def _publish_model(self, data: bytes, version: int) -> None:
        """Called from the training thread (rclpy publishers are thread-safe); signs ``data`` first."""
        if not self.active:  # a failed publication to the worker: it is not counted, and retried
            raise RuntimeError(f"model version {version} not published: the trainer is inactive")
        if self.signing_key is not None:
            data = sign_bundle_bytes(data, self.signing_key)
        msg = UInt8MultiArray()
        msg.data = data
        for publisher in self.model_pubs:  # every robot of a fleet plans with the same model
            publisher.publish(msg)
        stats = self.worker.stats()
        self.publications.append({"wall_time": time.time(), "version": version, "transitions": stats["transitions"],
                                  "backlog": stats["backlog"], "sac_updates_skipped": stats["sac_updates_skipped"]})
        self.get_logger().info(f"published model version {version} ({len(data) / 1e6:.2f} MB)")

    def _log(self, level: str, text: str) -> None:
        log_at(self.get_logger(), level, text)

    # ------------------------------------------------------------ reporting
    def summary(self) -> dict:
        """Counters of the run (the ``--summary`` file and the diagnostics values)."""
        return {**self.replay.stats(), **self.worker.stats(), "callback_errors": dict(self.callback_errors),
                "model_versions_published": list(self.worker.versions_published),
                "publications": list(self.publications), "gate_verdicts": list(self.worker.gate_verdicts)}

    def _publish_diagnostics(self) -> None:
        values = self.summary()
        values.pop("model_versions_published")
        values.pop("publications")
        values.pop("gate_verdicts")
        level, message = DiagnosticStatus.OK, "training"
        problems = [text for key, text in (("replay_write_errors", f"{values['replay_write_errors']} replay write "
                                            f"errors lost {values['replay_lost']} messages (disk full?)"),
                                           ("replay_dropped", "messages dropped"), ("training_errors", "training errors"),
                                           ("learner_state_errors", "learner state save errors"),
                                           ("callback_errors", "callback errors"))
                    if values[key]]
        if problems:
            level, message = DiagnosticStatus.WARN, "; ".join(problems) + " (see the log)"
        msg = diagnostics(self.get_clock().now().to_msg(), status_name(self.get_fully_qualified_name()),
                          "loop_ros", level, message, values)
        self.diagnostics_pub.publish(msg)

    def close(self) -> dict:
        """Close the bag (everything queued is written), stop learning; returns the summary.

        The learning thread is told first, so it winds down (``TrainingWorker``: at most one
        export, about 1 s) while the bag is closed; then it is joined, so no torch work is
        left running when the interpreter exits."""
        self.worker.request_stop()
        self.replay.close()
        self.worker.stop()
        self._learning = False
        return self.summary()


def main(argv=None) -> int:
    return run_node(TrainerNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())

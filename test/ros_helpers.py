"""Helpers of the real-process ROS tests: unique domains, node processes stopped by PID,
and a probe node in the test process (its own rclpy context) to publish, listen and set parameters."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO / "config" / "rc_car.yaml"
ROS_ENV = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}
PROVENANCE = {"command": "pytest", "steps": 0, "seed": 0, "eval_return": 0.0, "wall_time_s": 0.0}
BUNDLE_VERSION = 3


def domain_id(offset: int) -> int:
    """A ROS_DOMAIN_ID for one test: differs between tests (offset) and between test runs (pid)."""
    return 101 + (os.getpid() + 7 * offset) % 131


def ros_environment(domain: int) -> dict[str, str]:
    return {**os.environ, **ROS_ENV, "ROS_DOMAIN_ID": str(domain)}


def export_test_bundle(directory: Path, ensemble_size: int = 3, hidden: tuple[int, ...] = (32, 32)) -> Path:
    """A random-weight rc_car bundle (version ``BUNDLE_VERSION``): plans in a few ms, drives nowhere useful."""
    from contract_modules import make_tiny_modules

    from loop_ros.core.bundle import export_bundle

    dynamics, actor, critic = make_tiny_modules(6, 2, ensemble_size, hidden=hidden)
    return export_bundle(directory, dynamics, actor, critic, task="rc_car", obs_dim=6, act_dim=2,
                         ensemble_size=ensemble_size, action_low=-np.ones(2), action_high=np.ones(2),
                         provenance=dict(PROVENANCE), version=BUNDLE_VERSION)


def params_file(path: Path, base: Path = PARAMS_FILE, **overrides) -> Path:
    """``base`` (``config/rc_car.yaml``) with ``{'task.bundle': ...}``-style overrides, written to ``path``."""
    doc = yaml.safe_load(base.read_text())
    block = doc["/**"]["ros__parameters"]
    for key, value in overrides.items():
        section, name = key.split(".")
        block[section][name] = value
    path.write_text(yaml.safe_dump(doc))
    return path


def wait_until(predicate, timeout_s: float, what: str, pause: Callable[[], None]):
    """Call ``predicate()`` until truthy, ``pause()`` between calls; returns its value or fails naming ``what``."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        pause()
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class NodeProcess:
    """``python -m loop_ros.nodes.<module>`` in its own session, output in a log file; ``prefix``
    runs it through another command that execs it (``ip netns exec NS``: the PID stays the node's),
    ``env`` replaces the domain's environment."""

    def __init__(self, module: str, name: str, params: Path, domain: int | None, log_dir: Path,
                 summary: Path | None = None, ros_args: tuple[str, ...] = (), prefix: tuple[str, ...] = (),
                 env: dict | None = None, ready: Path | None = None):
        self.log_path = log_dir / f"{name}.log"
        command = [*prefix, sys.executable, "-m", f"loop_ros.nodes.{module}"]
        command += ["--summary", str(summary)] if summary else []
        command += ["--ready", str(ready)] if ready else []
        command += ["--ros-args", "--params-file", str(params), "-r", f"__node:={name}", *ros_args]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, env=ros_environment(domain) if env is None else env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGINT, then SIGKILL to this PID if it does not exit in time, then SIGKILL to whatever is
        left in its session's process group (it is the node's own); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.process.returncode


class Probe:
    """A node in the test process, in its own context on ``domain``."""

    def __init__(self, domain: int):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        os.environ.update(ROS_ENV)  # read when the context's DDS participant is created
        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("test_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.05, max(end - time.monotonic(), 0.0)))

    def wait_for(self, predicate, timeout_s: float, what: str):
        """Spin until ``predicate()`` is truthy; returns its value or fails naming ``what``."""
        return wait_until(predicate, timeout_s, what, lambda: self.executor.spin_once(timeout_sec=0.05))

    def collect(self, msg_type, topic: str, depth: int = 100) -> list:
        """Subscribe; the returned list fills with every message received while spinning."""
        received: list = []
        self.node.create_subscription(msg_type, topic, received.append, depth)
        return received

    def diagnostics(self, node_name: str = "/planner", kind: str = "planner") -> list[dict[str, str]]:
        """Subscribe to /diagnostics; the returned list fills with the ``kind`` node ``node_name``'s KeyValues."""
        import importlib

        from diagnostic_msgs.msg import DiagnosticArray

        from loop_ros.nodes.messages import diagnostic_values

        status_name = importlib.import_module(f"loop_ros.nodes.{kind}").status_name
        values: list[dict[str, str]] = []

        def keep(msg):
            found = diagnostic_values(msg, status_name(node_name))
            if found is not None:
                values.append(found)

        self.node.create_subscription(DiagnosticArray, "/diagnostics", keep, 10)
        return values

    def call(self, future, timeout_s: float = 10.0):
        self.executor.spin_until_future_complete(future, timeout_sec=timeout_s)
        assert future.done(), "service call timed out"
        return future.result()

    def parameter_client(self, node_name: str):
        from rclpy.parameter_client import AsyncParameterClient

        client = AsyncParameterClient(self.node, node_name)
        assert client.wait_for_services(timeout_sec=15.0), f"no parameter services of {node_name}"
        return client

"""``launch/loop.launch.py`` and the executables it starts."""
from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "loop.launch.py"


def test_the_node_executables_are_console_scripts():
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")
               if ep.value.startswith("loop_ros.")}
    assert scripts["sim"] == "loop_ros.nodes.sim:main"
    assert scripts["planner"] == "loop_ros.nodes.planner:main"
    assert scripts["lifecycle_manager"] == "loop_ros.nodes.lifecycle_manager:main"


def test_launch_description_starts_the_tasks_nodes_with_its_params_file():
    pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI: needs a ROS 2 distro install")
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location("loop_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entities = module.generate_launch_description().entities
    arguments = [e for e in entities if isinstance(e, DeclareLaunchArgument)]
    assert [a.name for a in arguments] == ["task", "params_file", "namespace", "use_sim_time", "log_level",
                                           "autostart", "foxglove", "signing_key", "trusted_keys",
                                           "discovery_range", "explore"]
    [discovery] = [e for e in entities if isinstance(e, SetEnvironmentVariable)]
    assert discovery.name[0].text == "ROS_AUTOMATIC_DISCOVERY_RANGE"
    defaults = {a.name: a.default_value[0].text for a in arguments}
    assert defaults["discovery_range"] == "LOCALHOST" and defaults["signing_key"].endswith("loop_ros_signing.pem")
    context = LaunchContext()
    for argument in arguments:
        context.launch_configurations[argument.name] = defaults[argument.name]
    [opaque] = [e for e in entities if isinstance(e, OpaqueFunction)]
    nodes = [n for n in module.task_node_actions(context) if isinstance(n, Node)]
    assert [(n.node_package, n.node_executable) for n in nodes] == [
        ("loop_ros", "trainer"), ("loop_ros", "sim"), ("loop_ros", "planner"), ("loop_ros", "lifecycle_manager")]
    context.launch_configurations["foxglove"] = "true"
    assert [n.node_executable for n in module.task_node_actions(context)][-2:] == ["foxglove_bridge",
                                                                                 "lifecycle_manager"]

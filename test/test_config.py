"""Settings flow one way (DESIGN.md section 2): params YAML <-> dataclass fields, and the
core stays free of ROS."""
from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

import loop_ros.core
from loop_ros.core.config import SECTIONS, flatten, from_params, load_params_file

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILES = sorted((REPO / "config").glob("*.yaml"))
ROS_PACKAGES = ("rclpy", "rcl_interfaces", "rosidl_runtime_py", "builtin_interfaces", "std_msgs", "nav_msgs",
                "geometry_msgs", "sensor_msgs", "diagnostic_msgs", "launch", "launch_ros", "ament_index_python")
ROS_IMPORT = re.compile(rf"^\s*(from|import)\s+({'|'.join(ROS_PACKAGES)})\b", re.MULTILINE)


def yaml_keys(path: Path) -> dict:
    """Flat ``{'arc.horizon': 10, ...}`` of the ``/**`` block, straight from the YAML."""
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == ["/**"], "one block for every node"
    return {f"{section}.{name}": value for section, fields in doc["/**"]["ros__parameters"].items()
            for name, value in fields.items()}


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: p.name)
def test_every_yaml_key_is_a_field_and_back(path):
    raw = yaml_keys(path)
    configs = from_params(load_params_file(str(path)))  # raises on an unknown key or a bad value
    assert flatten(configs) == raw
    for section in configs:  # a section in the file lists all of its fields
        assert {f"{section}.{name}" for name in SECTIONS[section].__dataclass_fields__} <= set(raw)


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: p.name)
def test_yaml_values_have_the_field_types(path):
    """The rcl parser types a value by how it is written (50 is an integer), and a ROS
    parameter refuses an integer for a float: floats must be written as floats."""
    for key, value in yaml_keys(path).items():
        section, name = key.split(".")
        annotation = typing.get_type_hints(SECTIONS[section])[name]
        expected = list if typing.get_origin(annotation) is tuple else annotation
        assert type(value) is expected, f"{key}: {value!r} is not a {expected.__name__}"


def test_params_files_cover_the_sections_the_nodes_declare():
    pytest.importorskip("rclpy")
    from loop_ros.nodes import foxglove_bridge, planner, sim, trainer

    declared = set().union(*(node.SECTIONS for node in (planner, sim, trainer, foxglove_bridge)))
    for path in PARAMS_FILES:
        sections = {key.split(".")[0] for key in yaml_keys(path)}
        assert sections == declared, path.name


def core_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(loop_ros.core.__path__, "loop_ros.core.")]


def test_core_source_has_no_ros_imports():
    core = Path(loop_ros.core.__file__).parent
    offenders = [f"{path.relative_to(core)}: {m.group(0).strip()}"
                 for path in core.rglob("*.py") for m in ROS_IMPORT.finditer(path.read_text())]
    assert offenders == []
    assert ROS_IMPORT.search("    from rclpy.node import Node\n")  # the pattern does catch one


def test_importing_every_core_module_loads_no_ros_package():
    modules = core_modules()
    assert "loop_ros.core.config" in modules and len(modules) > 5
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            f"print(sorted(p for p in {ROS_PACKAGES!r} if p in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"

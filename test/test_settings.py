"""What the commands share (``loop_ros.settings``): the one answer to "which params file", a task's
bundle, and parameters with ``--set`` overrides."""
from __future__ import annotations

from pathlib import Path

import pytest

from loop_ros.core.config import ConfigError
from loop_ros.core.tasks import make_task, task_file_name
from loop_ros.core.params_file import ros_override
from loop_ros.settings import bundle_path, load_params, params_file_of, parse_overrides

REPO = Path(__file__).resolve().parents[1]


def test_the_params_file_is_the_given_one_else_the_tasks_own_else_none():
    assert params_file_of(make_task("rc_car")) == REPO / "config" / "rc_car.yaml"
    assert params_file_of(make_task("gym:Hopper-v5")) == REPO / "config" / "gym_mujoco.yaml"
    assert params_file_of(make_task("rc_car"), "/x/p.yaml") == Path("/x/p.yaml")
    assert params_file_of(make_task("point_mass")) is None  # every setting at its default


def test_parameters_carry_the_tasks_name_and_the_overrides():
    params = load_params(make_task("gym:Walker2d-v5"), overrides=["arc.horizon=5", "ensemble.hidden=[8, 8]"])
    assert params["task.name"] == "gym:Walker2d-v5"  # the shared gym file names Hopper
    assert params["arc.horizon"] == 5 and params["ensemble.hidden"] == [8, 8]
    with pytest.raises(ConfigError, match="section.field=value"):
        load_params(make_task("rc_car"), overrides=["horizon=5"])
    with pytest.raises(ConfigError, match="no params file"):
        load_params(make_task("rc_car"), "/no/such/params.yaml")


def test_a_set_becomes_a_ros_override_typed_as_the_node_declares_it():
    settings = parse_overrides(["arc.beta_pess=0", "safety.enabled=false", "task.bundle=models/x",
                                "ensemble.hidden=[8, 8]"])
    assert [ros_override(key, value) for key, value in settings.items()] == [
        "arc.beta_pess:=0.0", "safety.enabled:=false", 'task.bundle:="models/x"', "ensemble.hidden:=[8, 8]"]
    assert ros_override("safety.obstacles", [1, 0, 0.5]) == "safety.obstacles:=[1.0, 0.0, 0.5]"  # one type for rcl


@pytest.mark.parametrize("setting, reason", [
    ("arc.horizon=15.0", "expected int"), ("safety.enabled=1", "expected bool"), ("task.bundle=007", "expected str"),
    ("task.bundle=", "expected str"), ("safety.obstacles=[]", "not empty"), ("ensemble.hidden=8", "give a list"),
    ("arc.horizonx=3", "unknown setting"), ("arc.horizon=[1", "not YAML")])
def test_a_set_the_node_would_read_otherwise_is_refused(setting, reason):
    with pytest.raises(ConfigError, match=reason):
        for key, value in parse_overrides([setting]).items():
            ros_override(key, value)


def test_the_bundle_is_the_params_one_else_the_tasks_default_else_none():
    assert bundle_path(make_task("rc_car"), {}) == REPO / "models" / "rc_car"
    assert bundle_path(make_task("rc_car"), {"task.bundle": "/b"}) == Path("/b")
    assert bundle_path(make_task("gym:Hopper-v5"), {"task.bundle": ""}) is None  # none ships
    # The car's params file names no bundle: each car task has its own (rc_car_fast: none ships).
    assert bundle_path(make_task("rc_car"), load_params(make_task("rc_car"))) == REPO / "models" / "rc_car"
    assert bundle_path(make_task("rc_car_fast"), load_params(make_task("rc_car_fast"))) is None


def test_task_names_become_file_name_parts():
    assert task_file_name("gym:Hopper-v5") == "gym_Hopper-v5"
    assert task_file_name("my_pkg.tasks:Arm") == "my_pkg.tasks_Arm"
    assert task_file_name("pkg.mod:My/Task") == "pkg.mod_My_Task"  # one path component (bench learn's run folders)

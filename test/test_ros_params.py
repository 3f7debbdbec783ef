"""Config dataclasses <-> ROS parameters (loop_ros.nodes.params), on in-process nodes."""
from __future__ import annotations

import dataclasses

import pytest
from ros_helpers import ROS_ENV, domain_id

rclpy = pytest.importorskip("rclpy")
from rclpy.parameter import Parameter  # noqa: E402

from loop_ros.core.config import SECTIONS, ConfigError  # noqa: E402
from loop_ros.core.params_file import field_docs  # noqa: E402
from loop_ros.nodes.params import ParameterBinding, edited_configs, parameter_type  # noqa: E402

PLANNER_SECTIONS = ("arc", "safety", "runtime", "task")


@pytest.fixture
def make_node(monkeypatch):
    """Factory of in-process nodes (``overrides``: {name: value}) in a private context."""
    for key, value in ROS_ENV.items():
        monkeypatch.setenv(key, value)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id(3))
    nodes = []

    def make(overrides=None):
        params = [Parameter(name, value=value) for name, value in (overrides or {}).items()]
        nodes.append(rclpy.create_node(f"params_test_{len(nodes)}", context=context, parameter_overrides=params))
        return nodes[-1]

    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown(context=context)


def bind(node, read_only=("task.name",)):
    changes = []
    return ParameterBinding(node, PLANNER_SECTIONS, changes.append, read_only=read_only), changes


def test_parameter_types_follow_the_field_annotations():
    assert parameter_type("arc", "horizon") == Parameter.Type.INTEGER
    assert parameter_type("arc", "eta") == Parameter.Type.DOUBLE
    assert parameter_type("safety", "enabled") == Parameter.Type.BOOL
    assert parameter_type("task", "controller") == Parameter.Type.STRING
    assert parameter_type("safety", "obstacles") == Parameter.Type.DOUBLE_ARRAY
    assert parameter_type("ensemble", "hidden") == Parameter.Type.INTEGER_ARRAY


def test_every_field_is_declared_with_its_type_and_docstring(make_node):
    node = make_node()
    binding, _ = bind(node)
    for section in PLANNER_SECTIONS:
        docs = field_docs(section)
        for field in dataclasses.fields(SECTIONS[section]):
            name = f"{section}.{field.name}"
            descriptor = node.describe_parameter(name)
            assert descriptor.type == parameter_type(section, field.name).value, name
            assert descriptor.description == docs[field.name]
        assert binding.configs[section] == SECTIONS[section]()  # no overrides: the defaults
    assert node.get_parameter("safety.obstacles").type_ == Parameter.Type.DOUBLE_ARRAY  # typed, though empty
    assert node.describe_parameter("task.name").read_only and not node.describe_parameter("arc.eta").read_only


def test_overrides_become_the_configs_and_a_wrong_type_is_a_config_error(make_node):
    binding, _ = bind(make_node({"arc.horizon": 7, "safety.obstacles": [1.0, 2.0, 0.5], "task.controller": "mppi"}))
    assert binding.configs["arc"].horizon == 7
    assert binding.configs["safety"].obstacles == (1.0, 2.0, 0.5)
    assert binding.configs["task"].controller == "mppi"
    with pytest.raises(ConfigError, match="task.control_rate_hz.*wrong type"):
        bind(make_node({"task.control_rate_hz": 50}))  # an int where the field is a float
    with pytest.raises(ConfigError, match="arc.population must be >= 2"):
        bind(make_node({"arc.population": 1}))


def test_a_valid_edit_is_handed_over_as_new_frozen_configs(make_node):
    node = make_node()
    binding, changes = bind(node)
    result = node.set_parameters_atomically([Parameter("safety.d0", value=0.5),
                                             Parameter("safety.obstacles", value=[1.0, 2.0, 0.5])])
    assert result.successful
    assert len(changes) == 1
    assert changes[0]["safety"] == dataclasses.replace(SECTIONS["safety"](), d0=0.5, obstacles=(1.0, 2.0, 0.5))
    assert changes[0]["arc"] == SECTIONS["arc"]()
    assert binding.configs is changes[0]


def test_an_invalid_edit_is_refused_with_the_reason_and_nothing_changes(make_node):
    node = make_node()
    binding, changes = bind(node)
    before = binding.configs
    for edit, reason in (([Parameter("safety.d0", value=-1.0)], "safety.d0 must be >= 0"),
                         ([Parameter("arc.horizon", value=0)], "arc.horizon must be >= 1"),
                         ([Parameter("safety.obstacles", value=[1.0, 2.0])], "x, y, r triples"),
                         ([Parameter("arc.eta", value=2.0), Parameter("arc.gamma", value=0.0)],
                          "arc.gamma must be in (0, 1]"),
                         ([Parameter("task.name", value="point_mass")], "read-only"),
                         ([Parameter("arc.horizon", value=2.5)], "Wrong parameter type")):
        result = node.set_parameters_atomically(edit)
        assert not result.successful and reason in result.reason, (edit, result.reason)
    assert changes == [] and binding.configs is before
    assert node.get_parameter("arc.eta").value == SECTIONS["arc"]().eta  # the valid half was not applied


def test_edited_configs_ignores_other_sections_and_refuses_unknown_fields():
    configs = {"arc": SECTIONS["arc"]()}
    assert edited_configs(configs, {"sim.episode_steps": 3, "arc.eta": 0.5})["arc"].eta == 0.5
    with pytest.raises(ConfigError, match="arc"):
        edited_configs(configs, {"arc.no_such_field": 1})


def test_a_non_finite_or_unbounded_edit_is_refused_over_the_parameter_service(make_node):
    """What `ros2 param set` does: the SetParametersAtomically service of the node, from another node."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter_client import AsyncParameterClient

    node = make_node()
    binding, changes = bind(node)
    before = binding.configs
    caller = make_node()
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    executor.add_node(caller)
    try:
        client = AsyncParameterClient(caller, node.get_fully_qualified_name())
        assert client.wait_for_services(timeout_sec=15.0)

        def call(future):
            executor.spin_until_future_complete(future, timeout_sec=10.0)
            assert future.done(), "parameter service call timed out"
            return future.result()

        for edit, reason in (
                ([Parameter("safety.keep_in_radius", value=float("nan"))],
                 "safety.keep_in_radius must be finite, got nan"),
                ([Parameter("task.state_timeout_s", value=float("inf"))],
                 "task.state_timeout_s must be finite, got inf"),
                ([Parameter("arc.population", value=10**9)], "arc.population must be <= 10000"),
                ([Parameter("arc.population", value=10_000), Parameter("arc.horizon", value=20)],
                 "arc.particles * population * horizon * iterations must be <= 100000"),
                ([Parameter("safety.obstacles", value=[1.0, float("nan"), 0.5])], "safety.obstacles[1] must be finite"),
                ([Parameter("arc.eta", value=0.5), Parameter("task.state_timeout_s", value=11.0)],
                 "task.state_timeout_s must be in (0, 10]")):
            result = call(client.set_parameters_atomically(edit)).result
            assert not result.successful and reason in result.reason, (edit, result.reason)
        values = call(client.get_parameters(["safety.keep_in_radius", "task.state_timeout_s", "arc.population",
                                             "arc.eta", "safety.obstacles"])).values
        assert [v.double_value for v in values[:2]] == [1.2, 0.1]
        assert values[2].integer_value == 100 and values[3].double_value == 1.0
        assert list(values[4].double_array_value) == []
        assert changes == [] and binding.configs is before
        # the service itself works: a valid edit is accepted and handed over
        accepted = call(client.set_parameters_atomically([Parameter("safety.keep_in_radius", value=0.0)])).result
        assert accepted.successful, accepted.reason
        assert len(changes) == 1 and changes[0]["safety"].keep_in_radius == 0.0
    finally:
        executor.shutdown()


def test_the_trust_settings_are_read_only_even_when_empty(make_node):
    """security.trusted_keys defaults to an empty list, declared by type and then set: it must still
    end read-only, or a parameter edit over DDS could make the planner trust any key."""
    fixed = ("security.signing_key", "security.trusted_keys")
    for overrides, trusted in (({}, ()), ({"security.trusted_keys": ["/keys/a.pub.pem"]}, ("/keys/a.pub.pem",))):
        node = make_node(overrides)
        changes = []
        binding = ParameterBinding(node, ("task", "security"), changes.append, read_only=fixed)
        assert binding.configs["security"].trusted_keys == trusted
        assert node.get_parameter("security.trusted_keys").type_ == Parameter.Type.STRING_ARRAY
        for name, value in (("security.trusted_keys", ["/tmp/attacker.pub.pem"]), ("security.signing_key", "/x")):
            assert node.describe_parameter(name).read_only, name
            result = node.set_parameters([Parameter(name, value=value)])[0]
            assert not result.successful and "read-only" in result.reason, (name, result.reason)
        assert changes == [] and binding.configs["security"].trusted_keys == trusted

"""Config dataclasses <-> ROS parameters: declare, validate before accepting, hand over.

Every field of a section becomes the parameter ``<section>.<field>`` with a descriptor
(type from the field's annotation, description from its docstring). An edit is checked
by building the new frozen dataclasses first (Nav2 MPPI style): a ``ConfigError`` rejects
the whole edit with its message and nothing changes; an accepted edit reaches the node
as one new ``{section: dataclass}`` mapping, which the node applies between ticks.
"""
from __future__ import annotations

import array
import dataclasses
import typing
from typing import Any, Callable, Iterable, Mapping

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node
from rclpy.parameter import Parameter

from loop_ros.core.config import SECTIONS, ConfigError
from loop_ros.core.params_file import field_docs, from_params

Configs = dict[str, Any]  # section name -> frozen dataclass

_SCALAR_TYPES = {
    bool: Parameter.Type.BOOL,
    int: Parameter.Type.INTEGER,
    float: Parameter.Type.DOUBLE,
    str: Parameter.Type.STRING,
}
_ARRAY_TYPES = {
    bool: Parameter.Type.BOOL_ARRAY,
    int: Parameter.Type.INTEGER_ARRAY,
    float: Parameter.Type.DOUBLE_ARRAY,
    str: Parameter.Type.STRING_ARRAY,
}


def parameter_type(section: str, name: str) -> Parameter.Type:
    """ROS parameter type of one dataclass field (``tuple[float, ...]`` -> DOUBLE_ARRAY)."""
    annotation = typing.get_type_hints(SECTIONS[section])[name]
    if typing.get_origin(annotation) is tuple:
        return _ARRAY_TYPES[typing.get_args(annotation)[0]]
    return _SCALAR_TYPES[annotation]


def python_value(value: Any) -> Any:
    """A parameter value as the dataclasses take it (ROS arrays arrive as ``array.array``)."""
    return list(value) if isinstance(value, (array.array, list, tuple)) else value


def declare_sections(node: Node, sections: Iterable[str], read_only: Iterable[str] = ()) -> None:
    """Declare ``<section>.<field>`` for every field; values from the params file, else defaults.

    An empty-list default is declared by type: rclpy would infer BYTE_ARRAY from ``[]``, and
    the rcl YAML parser reads ``[]`` as "not set", so such a field is then set explicitly (a
    read-only one is declared writable for that, then made read-only).
    """
    read_only = set(read_only)
    for section in sections:
        docs = field_docs(section)
        for field in dataclasses.fields(SECTIONS[section]):
            name = f"{section}.{field.name}"
            ptype = parameter_type(section, field.name)
            default = _field_default(field, ptype)
            descriptor = ParameterDescriptor(
                description=docs.get(field.name, ""), read_only=name in read_only and default != [])
            try:
                declared = node.declare_parameter(name, default if default != [] else ptype, descriptor)
            except InvalidParameterTypeException as err:
                raise ConfigError(f"{name}: the params file gives a value of the wrong type, "
                                  f"expected {ptype.name} (write 50.0, not 50, for a float)") from err
            if declared.type_ == Parameter.Type.NOT_SET:
                result = node.set_parameters([Parameter(name, ptype, default)])[0]
                if not result.successful:
                    raise ConfigError(f"{name}: cannot set its default: {result.reason}")
            if name in read_only and not descriptor.read_only:
                node.set_descriptor(name, ParameterDescriptor(description=descriptor.description, type=ptype.value,
                                                              read_only=True))


def _field_default(field: dataclasses.Field, ptype: Parameter.Type) -> Any:
    value = field.default
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    return float(value) if ptype == Parameter.Type.DOUBLE else python_value(value)


def read_configs(node: Node, sections: Iterable[str]) -> Configs:
    """The node's current parameter values as frozen dataclasses (raises ``ConfigError``)."""
    flat = {}
    for section in sections:
        for field in dataclasses.fields(SECTIONS[section]):
            name = f"{section}.{field.name}"
            flat[name] = python_value(node.get_parameter(name).value)
    return from_params(flat)


def edited_configs(configs: Mapping[str, Any], edits: Mapping[str, Any]) -> Configs:
    """New frozen configs with ``edits`` (``{'safety.d0': 0.1}``) applied; ``ConfigError`` if invalid.

    Names outside ``configs``' sections are ignored: they belong to someone else.
    """
    changes: dict[str, dict[str, Any]] = {}
    for name, value in edits.items():
        section, _, field = name.partition(".")
        if section in configs:
            changes.setdefault(section, {})[field] = python_value(value)
    updated = dict(configs)
    for section, fields in changes.items():
        try:
            updated[section] = dataclasses.replace(configs[section], **fields)
        except ConfigError:
            raise
        except (TypeError, ValueError) as err:  # a field the dataclass does not have, a value of the wrong type
            raise ConfigError(f"{section}: {err}") from err
    return updated


class ParameterBinding:
    """Keeps a node's section dataclasses in step with its parameters.

    ``on_change(configs)`` is called (from the executor thread that served the parameter
    service) with the complete new ``{section: dataclass}`` mapping after each accepted edit;
    the node decides when to apply it.
    """

    def __init__(self, node: Node, sections: Iterable[str],
                 on_change: Callable[[Configs], None], read_only: Iterable[str] = ()):
        self._node = node
        self._sections = tuple(sections)
        self._on_change = on_change
        declare_sections(node, self._sections, read_only)
        self.configs: Configs = read_configs(node, self._sections)
        node.add_on_set_parameters_callback(self._validate)
        node.add_post_set_parameters_callback(self._accepted)

    def _validate(self, parameters: list[Parameter]) -> SetParametersResult:
        edits = {p.name: p.value for p in parameters}
        try:
            edited_configs(self.configs, edits)
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _accepted(self, parameters: list[Parameter]) -> None:
        self.configs = read_configs(self._node, self._sections)
        self._on_change(self.configs)

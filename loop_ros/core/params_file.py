"""Settings from ROS 2 params files and flat ``section.field`` parameters, and back: the params
side of ``core/config.py`` (whose dataclasses hold every setting and its checks).

A params file has ``<node>: ros__parameters: <section>: <field>: value`` blocks; flat parameters are
``{'arc.horizon': 3, ...}``; configs are ``{'arc': ArcConfig(...), ...}``.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Iterable, Mapping

from loop_ros.core.config import SECTIONS, ConfigError


def field_docs(section: str) -> dict[str, str]:
    """Field name -> its docstring (the string literal under the field) for one section."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(SECTIONS[section]))
    body = tree.body[0].body
    docs = {}
    for stmt, nxt in zip(body, body[1:]):
        if isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[stmt.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def markdown_parameter_table() -> str:
    """README's parameter table: one row per field of every section."""
    import typing

    rows = ["| parameter | type | default | description |", "| --- | --- | --- | --- |"]
    for section, cls in SECTIONS.items():
        docs, hints = field_docs(section), typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            kind = f"{typing.get_args(hint)[0].__name__}[]" if typing.get_origin(hint) is tuple else hint.__name__
            default = list(f.default) if isinstance(f.default, tuple) else f.default
            doc = docs.get(f.name, "").replace("|", "\\|")
            rows.append(f"| `{section}.{f.name}` | {kind} | `{default}` | {doc} |")
    return "\n".join(rows)


def section_fields(section: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


def build_section(section: str, values: Mapping[str, Any]) -> Any:
    """Dataclass of one section from a flat ``{field: value}`` mapping (unknown keys refused)."""
    known = section_fields(section)
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"unknown {section} settings: {sorted(unknown)}")
    return SECTIONS[section](**values)


def flatten(configs: Mapping[str, Any]) -> dict[str, Any]:
    """``{'arc': ArcConfig(...)}`` -> ``{'arc.horizon': 3, ...}`` (tuples as lists)."""
    flat = {}
    for section, cfg in configs.items():
        for name, value in dataclasses.asdict(cfg).items():
            flat[f"{section}.{name}"] = list(value) if isinstance(value, tuple) else value
    return flat


def from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{'arc.horizon': 3, ...}`` (any subset of sections) -> ``{'arc': ArcConfig, ...}``."""
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise ConfigError(f"unknown setting '{key}'")
        grouped.setdefault(section, {})[name] = value
    return {section: build_section(section, values) for section, values in grouped.items()}


def load_params_file(path: str, node: str = "/**") -> dict[str, Any]:
    """Flat parameters of one node from a ROS 2 params YAML (``node: ros__parameters: ...``).

    Merges the ``/**`` block with the node's own block, the node's own winning.
    """
    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    flat: dict[str, Any] = {}
    for key in ("/**", node):
        block = (doc.get(key) or {}).get("ros__parameters", {})
        flat.update(_flatten_nested(block))
    return flat


def write_params_file(path, params: Mapping[str, Any], node: str = "/**") -> None:
    """Flat parameters as a ROS 2 params YAML (``node: ros__parameters: section: field: value``),
    for ``--params`` and the launch file's ``params_file``."""
    import yaml

    nested: dict[str, Any] = {}
    for key, value in params.items():
        section, _, name = key.partition(".")
        nested.setdefault(section, {})[name] = _as_declared(section, name, value)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({node: {"ros__parameters": nested}}, f, sort_keys=False)


def ros_override(key: str, value: Any) -> str:
    """``section.field:=value`` for a node's ``-p``, the value as the node declares it (JSON is YAML to
    rcl). ``ConfigError`` for an unknown setting, a value of another type (``arc.horizon=15.0``, a number
    for a string), none, or an empty list (rcl reads ``[]`` as "not set": the params file's value would stay)."""
    section, _, name = key.partition(".")
    if section not in SECTIONS or name not in section_fields(section):
        raise ConfigError(f"unknown setting '{key}'")
    hint = typing.get_type_hints(SECTIONS[section])[name]
    array = typing.get_origin(hint) is tuple
    kind = typing.get_args(hint)[0] if array else hint
    value = _as_declared(section, name, value)
    if array and (not isinstance(value, list) or not value):
        raise ConfigError(f"{key}: give a list of {kind.__name__}, not empty (rcl reads [] as not set: "
                          "an empty list goes in a params file)")
    if not all(type(item) is kind for item in (value if array else [value])):  # a bool is no int here
        raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r} (write 50.0 for a float; quote a "
                          "string that reads as something else: '\"007\"')")
    return f"{key}:={json.dumps(value)}"


def _as_declared(section: str, name: str, value: Any) -> Any:
    """``value`` as the node declares the parameter: a float field's integers (``--set arc.beta_pess=0``
    parses as 0; a float list's ``[1, 0, 0.5]``) written as floats (rcl refuses an integer for a double,
    and a list that mixes them); tuples as lists."""
    if section in SECTIONS:
        hint = typing.get_type_hints(SECTIONS[section]).get(name)
        if hint is float or hint == tuple[float, ...]:
            value = [_as_float(v) for v in value] if isinstance(value, (list, tuple)) else _as_float(value)
    return list(value) if isinstance(value, tuple) else value


def _as_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _flatten_nested(block: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in block.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten_nested(value, name + "."))
        else:
            flat[name] = value
    return flat


def section_configs(params: Mapping[str, Any], sections: Iterable[str]) -> dict[str, Any]:
    """The config dataclass of each of ``sections`` from flat parameters (other sections ignored)."""
    values: dict[str, dict[str, Any]] = {section: {} for section in sections}
    for key, value in params.items():
        section, _, name = key.partition(".")
        if section in values:
            values[section][name] = value
    return {section: build_section(section, fields) for section, fields in values.items()}

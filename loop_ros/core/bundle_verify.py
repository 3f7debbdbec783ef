"""Verifying a model bundle before anything plans with it: ``verify_bundle`` checks the graphs'
hashes, the ONNX IO contract against the manifest's dims, the caller's expectations (task, dims,
action bounds) and finite outputs within the action bounds on a probe batch, and raises
``BundleError`` naming what is wrong. The planner never trusts a bundle it did not verify.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from loop_ros.core.bundle import (BATCH, CONTRACT, GRAPH_FILES, PROBE_BATCH, Bundle, BundleError, contract_shape,
                                  sha256_hex)


def verify_bundle(bundle: Bundle, expected: Mapping[str, Any] | None = None) -> None:
    """Raise ``BundleError`` unless ``bundle`` is safe to plan with.

    Checks, in order: manifest fields against ``expected`` (e.g. ``{"task": "rc_car",
    "obs_dim": 6, "act_dim": 2}``), sha256 of each graph, that each graph parses, that
    its inputs/outputs match ``CONTRACT`` with the manifest's K, S, A and a dynamic B,
    and that a deterministic probe batch gives finite outputs of the contract's shapes.
    """
    _check_expected(bundle.manifest, expected or {})
    for name in GRAPH_FILES:
        _check_hash(bundle, name)
    sessions = {name: _probe_session(name, bundle.files[name]) for name in GRAPH_FILES}
    for name, session in sessions.items():
        _check_io(name, session, bundle)
    for name, session in sessions.items():
        _check_probe(name, session, bundle)


def _check_expected(manifest: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    for key, want in expected.items():
        if key not in manifest:
            raise BundleError(f"bundle manifest has no field {key!r} to compare with the expected {want!r}")
        have = manifest[key]
        if isinstance(want, (list, tuple, np.ndarray)):
            same = np.shape(have) == np.shape(want) and np.allclose(have, want)
        else:
            same = have == want
        if not same:
            raise BundleError(f"bundle {key} is {have!r}, expected {want!r}")


def _check_hash(bundle: Bundle, name: str) -> None:
    want = bundle.manifest["sha256"].get(name)
    have = sha256_hex(bundle.files[name])
    if have != want:
        raise BundleError(f"sha256 mismatch for {name}: file has {have}, manifest says {want}")


def _probe_session(name: str, data: bytes):
    """A minimal CPU session used only for verification (one thread, no spinning)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own Exception subclasses for any bad model
        raise BundleError(f"cannot parse {name} as an ONNX model: {error}") from error


def _check_io(name: str, session, bundle: Bundle) -> None:
    for kind, args in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        spec = CONTRACT[name][kind]
        have_names = [arg.name for arg in args]
        if have_names != [n for n, _ in spec]:
            raise BundleError(f"{name} {kind} are {have_names}, the contract says {[n for n, _ in spec]}")
        for arg, (arg_name, symbols) in zip(args, spec):
            if arg.type != "tensor(float)":
                raise BundleError(f"{name} {arg_name} is {arg.type}, the contract says tensor(float)")
            want = list(contract_shape(symbols, bundle.manifest, BATCH))
            if not _shape_matches(arg.shape, want):
                raise BundleError(
                    f"{name} {arg_name} has shape {arg.shape}, the manifest's dims give {want} ({BATCH} dynamic)"
                )


def _shape_matches(shape: list, want: list) -> bool:
    """Equal fixed dims, and any symbolic (non-integer) dim where ``want`` has ``BATCH``."""
    return len(shape) == len(want) and all(
        not isinstance(have, int) if dim == BATCH else have == dim for have, dim in zip(shape, want)
    )


def _probe_inputs(name: str, bundle: Bundle) -> dict[str, np.ndarray]:
    """Deterministic inputs for one graph: N(0, 1) states and noise, uniform actions in bounds."""
    rng = np.random.default_rng(0)
    feeds = {}
    for arg_name, symbols in CONTRACT[name]["inputs"]:
        shape = contract_shape(symbols, bundle.manifest, PROBE_BATCH)
        if arg_name == "action":
            feeds[arg_name] = rng.uniform(bundle.action_low, bundle.action_high, shape).astype(np.float32)
        else:
            feeds[arg_name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds


def _check_probe(name: str, session, bundle: Bundle) -> None:
    try:
        outputs = session.run(None, _probe_inputs(name, bundle))
    except Exception as error:  # any ORT failure on a well-formed batch means an unusable graph
        raise BundleError(f"{name} fails on the probe batch: {error}") from error
    for value, (arg_name, symbols) in zip(outputs, CONTRACT[name]["outputs"]):
        want = contract_shape(symbols, bundle.manifest, PROBE_BATCH)
        if value.shape != want:
            raise BundleError(f"{name} output {arg_name} has shape {value.shape} on the probe batch, expected {want}")
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        if bad:
            raise BundleError(
                f"{name} output {arg_name} is not finite on the probe batch ({bad} of {value.size} values)"
            )
    if name == "actor.onnx":
        _check_action_bounds(outputs[0], bundle)


def _check_action_bounds(action: np.ndarray, bundle: Bundle) -> None:
    slack = 1e-5 * (bundle.action_high - bundle.action_low)
    if np.any(action < bundle.action_low - slack) or np.any(action > bundle.action_high + slack):
        raise BundleError(
            f"actor.onnx actions leave the bounds [{bundle.action_low}, {bundle.action_high}] on the probe batch"
        )

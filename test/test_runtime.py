"""ONNX Runtime planning model against the torch modules, session settings, and the hot-swap holder."""
from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from loop_ros.core.bundle import Bundle, BundleError, bundle_to_bytes, read_bundle
from loop_ros.core.config import RuntimeConfig, TerminalValue
from loop_ros.core.runtime import ModelHolder, OrtPlanningModel

S, A, K = 6, 2, 3
EXPECTED = {"task": "rc_car", "obs_dim": S, "act_dim": A}


@pytest.fixture
def modules(tiny_modules):
    return tiny_modules(S, A, K)


@pytest.fixture
def bundle(export_tiny_bundle, modules):
    return read_bundle(export_tiny_bundle(obs_dim=S, act_dim=A, ensemble_size=K, modules=modules, version=3))


@pytest.mark.parametrize("batch", [1, 37])
def test_ort_outputs_equal_torch(bundle, modules, batch):
    import torch

    dynamics, actor, critic = modules
    model = OrtPlanningModel(bundle, RuntimeConfig())
    rng = np.random.default_rng(1)
    state = rng.standard_normal((K, batch, S), dtype=np.float32)
    action = rng.uniform(-1, 1, (K, batch, A)).astype(np.float32)
    noise = rng.standard_normal((K, batch, S), dtype=np.float32)
    actor_noise = rng.standard_normal((batch, A), dtype=np.float32)

    next_state, reward = model.dynamics(state, action, noise)
    with torch.no_grad():
        want_next, want_reward = dynamics(*map(torch.from_numpy, (state, action, noise)))
        want_action = actor(torch.from_numpy(state[0]), torch.from_numpy(actor_noise))
        want_q = critic(torch.from_numpy(state[0]), torch.from_numpy(action[0]))
    np.testing.assert_allclose(next_state, want_next.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(reward, want_reward.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(model.actor(state[0], actor_noise), want_action.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(model.critic(state[0], action[0]), want_q.numpy(), atol=1e-5, rtol=1e-5)
    assert next_state.dtype == np.float32 and reward.shape == (K, batch)
    assert model.critic(state[0], action[0]).shape == (batch,)


@pytest.mark.parametrize("threads, small_threads", [(3, 2), (1, 1)])
def test_model_reports_the_bundle_and_session_settings(bundle, threads, small_threads):
    model = OrtPlanningModel(bundle, RuntimeConfig(device="cpu", intra_op_threads=threads))
    assert (model.ensemble_size, model.obs_dim, model.act_dim, model.version) == (K, S, A, 3)
    assert model.providers == ["CPUExecutionProvider"]
    settings = {
        name: (options.intra_op_num_threads, options.inter_op_num_threads,
               options.get_session_config_entry("session.intra_op.allow_spinning"))
        for name, options in (
            ("dynamics", model._dynamics.get_session_options()),
            ("actor", model._actor.get_session_options()),
            ("critic", model._critic.get_session_options()),
        )
    }
    small = (small_threads, 1, "0")  # small graphs: at most 2 threads, never spinning
    assert settings == {"dynamics": (threads, 1, "1"), "actor": small, "critic": small}


@pytest.mark.parametrize("terminal", list(TerminalValue))
def test_a_rollout_split_over_one_thread_sessions_equals_one_session(bundle, terminal):
    """intra_op_threads = 3 on the CPU: three one-thread sessions on slices of B (7 rows: 2, 2, 3)."""
    H, B = 4, 7
    rng = np.random.default_rng(0)
    state = rng.standard_normal((K, B, S), dtype=np.float32)
    actions = rng.uniform(-1.0, 1.0, (H, K, B, A)).astype(np.float32)
    noise = rng.standard_normal((H, K, B, S), dtype=np.float32)
    split = OrtPlanningModel(bundle, RuntimeConfig(device="cpu", intra_op_threads=3))
    whole = OrtPlanningModel(bundle, RuntimeConfig(device="cpu", intra_op_threads=1))
    split.prepare(H, terminal)
    sessions = split._rollouts[(H, terminal)]
    assert len(sessions) == 3 and all(s.get_session_options().intra_op_num_threads == 1 for s in sessions)
    for got, want in zip(split.rollout(state, actions, noise, terminal), whole.rollout(state, actions, noise, terminal)):
        if want is None:
            assert got is None
        else:
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="a CUDA build is installed")
def test_cuda_falls_back_to_cpu_with_a_warning(bundle, caplog):
    with caplog.at_level(logging.WARNING, logger="loop_ros.core.runtime"):
        model = OrtPlanningModel(bundle, RuntimeConfig(device="cuda"))
    assert model.providers == ["CPUExecutionProvider"]
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "runtime.device is 'cuda' but ONNX Runtime runs on ['CPUExecutionProvider']" in caplog.text


def test_the_preparer_process_verifies_and_composes_and_refuses_bad_bundles(export_tiny_bundle):
    """The planner's loader: verify + compose in a child process, sessions here, one swap per good bundle."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from loop_ros.core.runtime import fused_graphs
    from loop_ros.core.signing import key_id, public_key_bytes, sign_bundle, sign_bundle_bytes
    from loop_ros.workers.model_loader import BundlePreparer

    key = Ed25519PrivateKey.generate()
    trust = ({key_id(key): public_key_bytes(key.public_key())}, 1)  # (trusted keys, active version)
    good = read_bundle(export_tiny_bundle(version=2, name="v2"))
    flipped = bytearray(good.files["dynamics.onnx"])
    flipped[100] ^= 0xFF
    corrupt = bundle_to_bytes(sign_bundle(Bundle(good.manifest, {**good.files, "dynamics.onnx": bytes(flipped)}), key))
    wrong_task = sign_bundle_bytes(bundle_to_bytes(export_tiny_bundle(version=3, name="v3", task="point_mass")), key)
    preparer, holder = BundlePreparer(), ModelHolder()
    try:
        files, graphs = preparer.prepare("bytes", bundle_to_bytes(sign_bundle(good, key)), EXPECTED, (4, TerminalValue.DISCOUNTED), trust)
        assert files == good.files and graphs == fused_graphs(good, 4, TerminalValue.DISCOUNTED)  # as composed here
        with pytest.raises(BundleError, match="sha256 mismatch for dynamics.onnx"):
            preparer.prepare("bytes", corrupt, EXPECTED, (4, TerminalValue.DISCOUNTED), trust)
        with pytest.raises(BundleError, match="bundle task is 'point_mass', expected 'rc_car'"):
            preparer.prepare("bytes", wrong_task, EXPECTED, None, trust)
        process = preparer._process
        assert process.is_alive()  # bad bundles are answers, not crashes
        files, graphs = preparer.prepare("directory", export_tiny_bundle(version=4, name="v4"), EXPECTED, None)
    finally:
        preparer.close()
    assert graphs is None and not process.is_alive()
    assert holder.current is None and holder.version is None
    model = OrtPlanningModel(read_bundle(export_tiny_bundle(version=4, name="v4")), RuntimeConfig())
    holder.swap(model)
    assert holder.current is model and holder.version == 4 and holder.swaps == 1

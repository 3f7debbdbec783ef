"""SAC: learns a tiny task, exact target / polyak / log-prob arithmetic, ONNX export."""
import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.distributions import Normal

from loop_ros.core.config import SacConfig
from loop_ros.core.sac import Sac, TransitionBuffer, polyak_update
from loop_ros.core.bundle import export_graph

torch.set_num_threads(1)
SMALL = SacConfig(hidden=(64, 64), batch_size=64, gamma=0.9, tau=0.01, lr=1e-3)
GOAL, EPISODE_STEPS, STEP_SIZE = 0.5, 10, 0.2


def point_step(state, action):
    """1-D point: x' = clip(x + 0.2 a, -1.5, 1.5), reward -|x' - 0.5|."""
    next_state = np.clip(state + STEP_SIZE * np.clip(action, -1.0, 1.0), -1.5, 1.5)
    return next_state.astype(np.float32), -abs(next_state[0] - GOAL)


def episode_return(policy, starts):
    """Mean undiscounted return of ``policy(state) -> action`` over episodes from ``starts``."""
    total = 0.0
    for x in starts:
        state = np.array([x], np.float32)
        for _ in range(EPISODE_STEPS):
            state, reward = point_step(state, policy(state))
            total += reward
    return total / len(starts)


def test_sac_learns_to_reach_the_goal():
    sac = Sac(1, 1, np.array([-1.0]), np.array([1.0]), SMALL, seed=0)
    rng = np.random.default_rng(0)
    buffer = TransitionBuffer(1, 1, capacity=5000)
    starts = np.linspace(-1.0, 1.0, 9)

    def greedy(state):
        return sac.act(state, deterministic=True, rng=rng)

    before = episode_return(greedy, starts)
    state = rng.uniform(-1, 1, 1).astype(np.float32)
    for step in range(900):
        action = rng.uniform(-1, 1, 1) if step < 200 else sac.act(state, deterministic=False, rng=rng)
        next_state, reward = point_step(state, action)
        buffer.add(state, action, reward, next_state, 0.0)  # episodes end by time limit: not terminal
        state = next_state if (step + 1) % EPISODE_STEPS else rng.uniform(-1, 1, 1).astype(np.float32)
        if step >= 200:
            sac.update(buffer.sample(SMALL.batch_size, rng))
    after = episode_return(greedy, starts)
    optimal = episode_return(lambda s: (GOAL - s) / STEP_SIZE, starts)  # full speed to the goal
    # Untrained: ~-6.7 (it barely moves); optimal ~-1.4. Require most of the gap closed.
    assert before < optimal - 4.0
    assert after > before + 0.75 * (optimal - before)


def tiny_sac(**changes):
    return Sac(2, 1, np.array([-2.0]), np.array([2.0]), dataclasses.replace(SMALL, **changes), seed=1)


@pytest.mark.parametrize("raised_head", ["q1", "q2"])
def test_td_target_uses_the_smaller_target_q(raised_head):
    sac = tiny_sac()
    torch.manual_seed(0)
    reward, done = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.0, 0.0, 1.0])
    next_state, noise = torch.randn(3, 2), torch.randn(3, 1)
    with torch.no_grad():
        next_action, log_prob = sac.actor.sample(next_state, noise)
        q1, q2 = sac.critic_target.both(next_state, next_action)
        # Lift one target head above the other everywhere, so the other one is the min.
        getattr(sac.critic_target, raised_head)[-1].bias += (q1 - q2).abs().max() + 1.0
    smaller = q2 if raised_head == "q1" else q1
    # r + gamma (1 - d) (min Q' - alpha log pi), gamma = 0.9; the terminal row is just r.
    hand = reward + 0.9 * (1.0 - done) * (smaller - sac.alpha * log_prob)
    torch.testing.assert_close(sac.td_target(reward, next_state, done, noise), hand)
    assert sac.td_target(reward, next_state, done, noise)[2] == 2.0


def test_polyak_update_arithmetic():
    source, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    torch.nn.init.constant_(source.weight, 1.0)
    torch.nn.init.constant_(target.weight, 3.0)
    polyak_update(target, source, tau=0.25)
    torch.testing.assert_close(target.weight, torch.full((2, 2), 0.25 * 1.0 + 0.75 * 3.0))


def test_update_moves_targets_by_tau_towards_the_updated_critics():
    sac, rng = tiny_sac(tau=0.1), np.random.default_rng(0)
    old_target = [p.clone() for p in sac.critic_target.parameters()]
    batch = {"s": rng.standard_normal((8, 2)), "a": rng.uniform(-2, 2, (8, 1)), "r": rng.standard_normal(8),
             "s2": rng.standard_normal((8, 2)), "d": np.zeros(8)}
    sac.update(batch)
    for old, new, online in zip(old_target, sac.critic_target.parameters(), sac.critic.parameters()):
        torch.testing.assert_close(new, 0.1 * online + 0.9 * old)


def test_squashed_log_prob_matches_numerical_density():
    actor = tiny_sac().actor.double()
    torch.manual_seed(0)
    state, noise = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
    action, log_prob = actor.sample(state, noise)
    mu, log_std = actor.distribution(state)
    # Reference: density of a = 2 tanh(u), u ~ N(mu, std), as the central difference of its CDF
    # P(A <= a) = Phi((atanh(a / 2) - mu) / std).
    pre_tanh = Normal(mu, log_std.exp())
    h = 1e-6
    density = (pre_tanh.cdf(torch.atanh((action + h) / 2.0)) - pre_tanh.cdf(torch.atanh((action - h) / 2.0))) / (2 * h)
    torch.testing.assert_close(log_prob, torch.log(density).sum(-1), rtol=1e-5, atol=1e-5)


def test_actions_stay_in_asymmetric_bounds_and_noise_zero_is_the_mean():
    actor = Sac(2, 2, np.array([-1.0, 0.0]), np.array([1.0, 3.0]), SMALL).actor
    torch.manual_seed(0)
    state = torch.randn(1000, 2)
    action = actor(state, 10.0 * torch.randn(1000, 2))
    assert (action >= torch.tensor([-1.0, 0.0])).all() and (action <= torch.tensor([1.0, 3.0])).all()
    mu, _ = actor.distribution(state)
    bias, scale = torch.tensor([0.0, 1.5]), torch.tensor([1.0, 1.5])  # (high + low) / 2, (high - low) / 2
    torch.testing.assert_close(actor(state, torch.zeros(1000, 2)), bias + scale * torch.tanh(mu))


@pytest.mark.parametrize("target_entropy, alpha_grows", [(5.0, True), (-10.0, False)])
def test_temperature_moves_towards_the_target_entropy(target_entropy, alpha_grows):
    sac, rng = tiny_sac(target_entropy=target_entropy), np.random.default_rng(0)
    batch = {"s": rng.standard_normal((8, 2)), "a": rng.uniform(-2, 2, (8, 1)), "r": rng.standard_normal(8),
             "s2": rng.standard_normal((8, 2)), "d": np.zeros(8)}
    alpha_before = sac.alpha
    sac.update(batch)
    assert (sac.alpha > alpha_before) == alpha_grows


def test_default_target_entropy_is_minus_action_dim():
    assert Sac(3, 2, -np.ones(2), np.ones(2), SacConfig()).target_entropy == -2.0


def run_onnx(module, name, feed):
    dims = {"obs_dim": module.obs_dim, "act_dim": module.act_dim, "ensemble_size": 1}
    session = ort.InferenceSession(export_graph(module, name, dims), providers=["CPUExecutionProvider"])
    return session.run(None, {name: value.astype(np.float32) for name, value in feed.items()})[0]


def test_actor_and_critic_onnx_equal_torch():
    sac, rng = tiny_sac(), np.random.default_rng(2)
    state, noise, action = rng.standard_normal((9, 2)), rng.standard_normal((9, 1)), rng.uniform(-2, 2, (9, 1))
    state_t, noise_t, action_t = (torch.as_tensor(x, dtype=torch.float32) for x in (state, noise, action))
    actor, critic = sac.actor_module(), sac.critic_module()
    onnx_action = run_onnx(actor, "actor.onnx", {"state": state, "noise": noise})
    onnx_q = run_onnx(critic, "critic.onnx", {"state": state, "action": action})
    with torch.no_grad():
        torch_q1, torch_q2 = critic.both(state_t, action_t)
        torch_action = actor(state_t, noise_t)
    np.testing.assert_allclose(onnx_action, torch_action.numpy(), atol=1e-5, rtol=0)
    assert onnx_q.shape == (9,)
    np.testing.assert_allclose(onnx_q, torch.minimum(torch_q1, torch_q2).numpy(), atol=1e-5, rtol=0)


def test_transition_buffer_wraps_around():
    buffer = TransitionBuffer(1, 1, capacity=4)
    buffer.add(np.arange(3.0)[:, None], np.zeros((3, 1)), np.arange(3.0), np.zeros((3, 1)), np.zeros(3))
    buffer.add(np.array([3.0]), np.zeros(1), 3.0, np.zeros(1), 0.0)
    buffer.add(np.arange(4.0, 6.0)[:, None], np.zeros((2, 1)), np.arange(4.0, 6.0), np.zeros((2, 1)), np.zeros(2))
    assert len(buffer) == 4
    np.testing.assert_array_equal(buffer.arrays()["r"], [4.0, 5.0, 2.0, 3.0])  # 0 and 1 overwritten
    np.testing.assert_array_equal(buffer.arrays()["s"][:, 0], [4.0, 5.0, 2.0, 3.0])
    assert set(buffer.sample(50, np.random.default_rng(0))["r"]) == {2.0, 3.0, 4.0, 5.0}

"""CRR: exact weights / log-prob / target / advantage arithmetic, determinism, a bandit it solves, its settings."""
import dataclasses
import functools

import numpy as np
import pytest
import torch

from learner_checks import assert_refused, bandit_data, greedy_action_after_training, same_seed_same_parameters
from loop_ros.core.config import CrrConfig
from loop_ros.core.crr import Crr, advantage_weights, dataset_log_prob

torch.set_num_threads(1)
SMALL = CrrConfig(hidden=(32, 32), lr=1e-3, batch_size=64, gamma=0.9, advantage_samples=3)


def tiny_crr(seed=1, **changes):
    return Crr(2, 1, np.array([-2.0]), np.array([2.0]), dataclasses.replace(SMALL, **changes), seed=seed)


def test_advantage_weights_by_hand():
    advantages = torch.tensor([-1.0, 0.0, 0.5, 2.0, 100.0])
    # exp(A / 0.5) = e^-2, e^0, e^1, e^4 = 54.6 -> clipped to 20, e^200 = inf in float32 -> 20
    torch.testing.assert_close(advantage_weights(advantages, "exp", 0.5, 20.0),
                               torch.tensor([0.1353353, 1.0, 2.7182817, 20.0, 20.0]))
    torch.testing.assert_close(advantage_weights(advantages, "binary", 0.5, 20.0),
                               torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))  # A = 0 is not an improvement
    with pytest.raises(ValueError, match="softmax"):
        advantage_weights(advantages, "softmax", 0.5, 20.0)


def test_dataset_log_prob_is_the_tanh_gaussian_density_and_finite_at_the_bounds():
    low, high = np.array([-1.0, 0.0]), np.array([1.0, 3.0])
    actor = Crr(2, 2, low, high, SMALL).actor
    rng = np.random.default_rng(0)
    state = torch.as_tensor(rng.standard_normal((4, 2)), dtype=torch.float32)
    action = rng.uniform(low + 0.05, high - 0.05, (4, 2))
    with torch.no_grad():
        log_prob = dataset_log_prob(actor, state, torch.as_tensor(action, dtype=torch.float32)).numpy()
        mu, log_std = (x.double().numpy() for x in actor.distribution(state))
    # a = bias + scale tanh(u), u ~ N(mu, std): p(a) = N(atanh(y); mu, std) / (scale (1 - y^2)), y = (a - bias) / scale
    scale, bias = (high - low) / 2, (high + low) / 2
    y = (action - bias) / scale
    std = np.exp(log_std)
    normal = np.exp(-0.5 * ((np.arctanh(y) - mu) / std) ** 2) / (std * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(log_prob, np.log(normal / (scale * (1 - y ** 2))).sum(-1), rtol=1e-4, atol=1e-4)

    at_bounds = torch.tensor([[-1.0, 0.0], [1.0, 3.0], [-1.0, 3.0], [1.0, 0.0]])
    log_prob = dataset_log_prob(actor, state, at_bounds)
    log_prob.sum().backward()
    assert torch.isfinite(log_prob).all()
    assert all(torch.isfinite(p.grad).all() for p in actor.parameters())


def test_td_target_and_advantage_by_hand():
    crr = tiny_crr()
    torch.manual_seed(0)
    with torch.no_grad():  # targets unlike the online critics, so using the wrong ones shows
        for p in crr.critic_target.parameters():
            p += 0.3 * torch.randn_like(p)
    state, action, next_state = torch.randn(3, 2), torch.rand(3, 1) * 4 - 2, torch.randn(3, 2)
    reward, done = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.0, 0.0, 1.0])
    noise = torch.randn(4, 3, 1)  # m = 4 samples for each of the 3 rows

    def min_q(critic, s, a):
        q1, q2 = critic.both(s[None], a[None])
        return min(q1.item(), q2.item())

    def policy_value(critic, s, row):
        """(1/m) sum_j min(Q1, Q2)(s, 2 tanh(mu + std noise_j)), one sample at a time."""
        mu, log_std = crr.actor.distribution(s[None])
        return np.mean([min_q(critic, s, 2.0 * torch.tanh(mu[0] + log_std[0].exp() * n[row])) for n in noise])

    with torch.no_grad():
        target = [reward[b].item() + 0.9 * (1.0 - done[b].item()) * policy_value(crr.critic_target, next_state[b], b)
                  for b in range(3)]
        advantage = [min_q(crr.critic, state[b], action[b]) - policy_value(crr.critic, state[b], b) for b in range(3)]
    as_tensor = functools.partial(torch.tensor, dtype=torch.float32)
    torch.testing.assert_close(crr.td_target(reward, next_state, done, noise), as_tensor(target))
    torch.testing.assert_close(crr.advantage(state, action, noise), as_tensor(advantage))
    assert crr.td_target(reward, next_state, done, noise)[2] == 2.0  # terminal: just r


def test_same_seed_same_batches_same_parameters():
    metrics = same_seed_same_parameters([tiny_crr(seed=0), tiny_crr(seed=0), tiny_crr(seed=1)])
    assert set(metrics) == {"critic_loss", "actor_loss", "q_mean", "advantage_mean", "weight_mean",
                            "positive_advantage_fraction"}


@pytest.mark.parametrize("changes", [dict(weighting="exp", temperature=0.3), dict(weighting="binary")],
                         ids=["exp", "binary"])
def test_crr_prefers_the_better_dataset_actions_on_a_bandit(changes):
    """The bandit of ``bandit_data``: imitating the data gives about its mean (0); CRR's actor goes to 0.5."""
    rng = np.random.default_rng(0)
    data = bandit_data(rng)
    crr = Crr(2, 1, np.array([-1.0]), np.array([1.0]), dataclasses.replace(SMALL, **changes), seed=0)
    greedy, data_mean = greedy_action_after_training(crr, data, rng, SMALL.batch_size), data["a"].mean()
    assert abs(greedy - 0.5) < 0.5 * abs(data_mean - 0.5), (greedy, data_mean)


@pytest.mark.parametrize("changes, message", [
    (dict(weighting="softmax"), "crr.weighting must be one of ('exp', 'binary')"),
    (dict(temperature=0.0), "crr.temperature must be > 0"),
    (dict(temperature=-1.0), "crr.temperature must be > 0"),
    (dict(max_weight=0.0), "crr.max_weight must be > 0"),
    (dict(advantage_samples=0), "crr.advantage_samples must be >= 1"),
    (dict(steps=0), "crr.steps must be >= 1"),
])
def test_invalid_settings_are_refused_naming_the_parameter(changes, message):
    assert_refused(CrrConfig, "crr", changes, message)

"""ROSMO: exact improvement weights / lookahead values / actor losses, determinism, a bandit it solves through
the model, its settings, and `loop-ros offline --learner rosmo` end to end."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import test_offline
from learner_checks import assert_refused, bandit_data, greedy_action_after_training, same_seed_same_parameters
from loop_ros import cli
from loop_ros.core.bundle import read_bundle
from loop_ros.core.bundle_verify import verify_bundle
from loop_ros.core.config import RosmoConfig
from loop_ros.core.crr import dataset_log_prob
from loop_ros.core.params_file import load_params_file, section_configs
from loop_ros.core.rosmo import Rosmo, improvement_weights
from loop_ros.core.tasks import make_task
from loop_ros.core.value_learners import OFFLINE_LEARNERS, make_offline_learner

torch.set_num_threads(1)
SMALL = RosmoConfig(hidden=(32, 32), lr=1e-3, batch_size=64, gamma=0.9, lookahead_samples=4, value_samples=3)
DT, OFFSET = 0.1, torch.tensor([0.05, -0.1])
dataset = test_offline.dataset  # the tiny point_mass bag (module-scoped fixture), shared with test_offline


class PointMassModel(nn.Module):
    """EnsembleDynamics's call on an exact point mass (x, v), a = force: member k predicts
    s' = (x + dt v, v + dt a) + k OFFSET + 0.5 noise, r = -x'^2 - 0.1 a^2 + 0.2 k (the members disagree, and a
    nonzero noise would show)."""

    ensemble_size, obs_dim, act_dim = 2, 2, 1

    def forward(self, state, action, noise):
        k = torch.arange(self.ensemble_size, dtype=state.dtype)[:, None]  # (K, 1)
        x, v, a = state[..., 0], state[..., 1], action[..., 0]
        mean = torch.stack([x + DT * v, v + DT * a], dim=-1) + k[..., None] * OFFSET
        return mean + 0.5 * noise, -mean[..., 0] ** 2 - 0.1 * a ** 2 + 0.2 * k


class BanditModel(nn.Module):
    """s' = s, r = -(a - 0.5)^2 for every member: the one-step bandit's reward, known to the model."""

    ensemble_size, obs_dim, act_dim = 3, 2, 1

    def forward(self, state, action, noise):
        return state + 0.0 * noise, -(action[..., 0] - 0.5) ** 2


def tiny_rosmo(seed=1, dynamics=None, **changes):
    return Rosmo(2, 1, np.array([-2.0]), np.array([2.0]), dataclasses.replace(SMALL, **changes),
                 dynamics or PointMassModel(), seed=seed)


def test_improvement_weights_by_hand():
    # columns: states; rows: the N = 4 samples
    advantages = torch.tensor([[-1.0, -0.2, 1000.0],
                               [0.0, 0.0, -1.0],
                               [0.5, -1.0, -1.0],
                               [1.5, -3.0, -1.0]])
    # T = 0.5: column 0 keeps 0.5 and 1.5 (A = 0 is no improvement): e^1 / (e^1 + e^3), e^3 / (e^1 + e^3);
    # column 1 has no positive advantage: all 0; column 2: e^2000 would overflow, the one positive sample gets 1
    expected = torch.tensor([[0.0, 0.0, 1.0],
                             [0.0, 0.0, 0.0],
                             [0.11920292, 0.0, 0.0],
                             [0.88079708, 0.0, 0.0]])
    torch.testing.assert_close(improvement_weights(advantages, 0.5), expected)
    # T = 1: e^0.5 / (e^0.5 + e^1.5) = 0.26894142
    torch.testing.assert_close(improvement_weights(advantages, 1.0)[2:, 0], torch.tensor([0.26894142, 0.73105858]))


def test_lookahead_values_against_a_literal_computation():
    rosmo = tiny_rosmo()
    torch.manual_seed(0)
    with torch.no_grad():  # targets unlike the online critics, so using the wrong ones shows
        for p in rosmo.critic_target.parameters():
            p += 0.3 * torch.randn_like(p)
    n, m, batch = 3, 2, 4
    state = torch.randn(batch, 2)
    action_noise, value_noise = torch.randn(n, batch, 1), torch.randn(m, n, batch, 1)
    actions, values = rosmo.lookahead(state, action_noise, value_noise)
    assert actions.shape == (n, batch, 1) and values.shape == (n, batch)

    def actor_sample(s, noise):
        """2 tanh(mu + std noise) at one state (bounds +-2)."""
        mu, log_std = rosmo.actor.distribution(torch.as_tensor([s], dtype=torch.float32))
        return 2.0 * math.tanh(mu[0, 0].item() + math.exp(log_std[0, 0].item()) * noise)

    def min_q_target(s, a):
        q1, q2 = rosmo.critic_target.both(torch.tensor([s], dtype=torch.float32), torch.tensor([[a]]))
        return min(q1.item(), q2.item())

    with torch.no_grad():
        for b in range(batch):
            x, v = state[b].tolist()
            for i in range(n):
                a = actor_sample([x, v], action_noise[i, b, 0].item())
                assert actions[i, b, 0].item() == pytest.approx(a, abs=1e-5)
                members = [(x + DT * v + k * 0.05, v + DT * a - k * 0.1) for k in range(2)]  # noise 0
                rewards = [-nx ** 2 - 0.1 * a ** 2 + 0.2 * k for k, (nx, _) in enumerate(members)]
                next_state = [np.mean([s[0] for s in members]), np.mean([s[1] for s in members])]
                value = np.mean([min_q_target(next_state, actor_sample(next_state, value_noise[j, i, b, 0].item()))
                                 for j in range(m)])
                expected = np.mean(rewards) + 0.9 * value
                assert values[i, b].item() == pytest.approx(expected, abs=1e-5), (i, b)


def test_actor_losses_by_hand():
    rosmo = tiny_rosmo()
    torch.manual_seed(1)
    state, action = torch.randn(3, 2), torch.rand(3, 1) * 4 - 2
    samples, weight = torch.rand(2, 3, 1) * 4 - 2, torch.tensor([[0.25, 0.0, 1.0], [0.75, 0.0, 0.0]])
    improvement, bc = rosmo.actor_losses(state, action, samples, weight)
    with torch.no_grad():
        def log_pi(s, a):
            return dataset_log_prob(rosmo.actor, s[None], a[None]).item()

        expected_improvement = -np.mean([sum(weight[i, b].item() * log_pi(state[b], samples[i, b]) for i in range(2))
                                         for b in range(3)])
        expected_bc = -np.mean([log_pi(state[b], action[b]) for b in range(3)])
    assert improvement.item() == pytest.approx(expected_improvement, abs=1e-5)
    assert bc.item() == pytest.approx(expected_bc, abs=1e-5)
    assert improvement.requires_grad and bc.requires_grad


def test_same_seed_same_batches_same_parameters():
    metrics = same_seed_same_parameters([tiny_rosmo(seed=0, bc_weight=0.5), tiny_rosmo(seed=0, bc_weight=0.5),
                                         tiny_rosmo(seed=1, bc_weight=0.5)])
    assert set(metrics) == {"critic_loss", "actor_loss", "q_mean", "improvement_loss", "bc_loss",
                            "lookahead_value_mean", "advantage_std", "positive_advantage_fraction",
                            "improved_state_fraction"}
    assert metrics["actor_loss"] == pytest.approx(metrics["improvement_loss"] + 0.5 * metrics["bc_loss"])


@pytest.mark.parametrize("bc_weight", [0.0, 1.0, 100.0])
def test_rosmo_moves_the_actor_towards_the_best_action_the_model_knows(bc_weight):
    """The bandit of ``bandit_data``, its reward known to the model: imitating the data gives about its mean
    (0); the lookahead's improvement alone takes ROSMO's actor to 0.5, the behaviour regularisation holds it
    back towards the data."""
    rng = np.random.default_rng(0)
    data = bandit_data(rng)
    cfg = dataclasses.replace(SMALL, temperature=0.1, bc_weight=bc_weight)
    rosmo = Rosmo(2, 1, np.array([-1.0]), np.array([1.0]), cfg, BanditModel(), seed=0)
    greedy, data_mean = greedy_action_after_training(rosmo, data, rng, SMALL.batch_size), data["a"].mean()
    if bc_weight == 0.0:
        assert abs(greedy - 0.5) < 0.1, greedy
    elif bc_weight == 1.0:  # 0.28 here: nearer the best action than the data's mean (-0.03)
        assert abs(greedy - 0.5) < 0.5 * abs(data_mean - 0.5), (greedy, data_mean)
    else:  # all but behaviour cloning
        assert abs(greedy - data_mean) < 0.1, (greedy, data_mean)


@pytest.mark.parametrize("changes, message", [
    (dict(lr=0.0), "rosmo.lr must be > 0"),
    (dict(batch_size=0), "rosmo.batch_size must be >= 1"),
    (dict(gamma=1.5), "rosmo.gamma must be in [0, 1]"),
    (dict(tau=0.0), "rosmo.tau must be in (0, 1]"),
    (dict(lookahead_samples=1), "rosmo.lookahead_samples must be >= 2"),
    (dict(value_samples=0), "rosmo.value_samples must be >= 1"),
    (dict(temperature=0.0), "rosmo.temperature must be > 0"),
    (dict(temperature=-1.0), "rosmo.temperature must be > 0"),
    (dict(bc_weight=-0.1), "rosmo.bc_weight must be >= 0"),
    (dict(bc_weight=math.nan), "rosmo.bc_weight must be finite"),
    (dict(steps=0), "rosmo.steps must be >= 1"),
])
def test_invalid_settings_are_refused_naming_the_parameter(changes, message):
    assert_refused(RosmoConfig, "rosmo", changes, message)


def test_defaults_and_edges():
    cfg = RosmoConfig()
    assert (cfg.hidden, cfg.lr, cfg.batch_size, cfg.gamma, cfg.tau) == ((256, 256), 3e-4, 256, 0.99, 0.005)
    assert (cfg.lookahead_samples, cfg.value_samples, cfg.temperature, cfg.bc_weight, cfg.steps) == (
        8, 4, 1.0, 1.0, 100_000)
    assert RosmoConfig(bc_weight=0.0, lookahead_samples=2, gamma=0.0).bc_weight == 0.0
    assert RosmoConfig(hidden=[16]).hidden == (16,)


def test_make_offline_learner_needs_the_dynamics():
    task = make_task("point_mass")
    assert "rosmo" in OFFLINE_LEARNERS
    configs = section_configs({"rosmo.hidden": [8]}, ("rosmo",))
    with pytest.raises(ValueError, match="rosmo learner looks ahead through the dynamics model"):
        make_offline_learner("rosmo", task, configs, seed=0)
    model = PointMassModel()
    model.obs_dim, model.act_dim = task.obs_dim, task.act_dim
    assert isinstance(make_offline_learner("rosmo", task, configs, seed=0, dynamics=model), Rosmo)
    model.obs_dim = task.obs_dim + 1
    with pytest.raises(ValueError, match="dynamics model is for obs_dim"):
        make_offline_learner("rosmo", task, configs, seed=0, dynamics=model)


TINY = [arg.replace("crr.", "rosmo.") for arg in test_offline.TINY] + ["--set", "rosmo.lookahead_samples=3",
                                                                       "--set", "rosmo.value_samples=2"]


def offline_rosmo(dataset, out, *extra) -> dict:
    assert cli.main(["offline", "--task", "point_mass", "--data", str(dataset), "--out", str(out), "--learner",
                     "rosmo", *TINY, *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_loop_ros_offline_learns_a_verified_bundle_with_rosmo(dataset, tmp_path):
    first = offline_rosmo(dataset, tmp_path / "a", "--seed", "3")
    again = offline_rosmo(dataset, tmp_path / "b", "--seed", "3")
    bundles = [read_bundle(tmp_path / name / "bundle") for name in "ab"]
    for bundle in bundles:
        verify_bundle(bundle, expected=test_offline.TASK.describe())
    assert bundles[0].manifest["sha256"] == bundles[1].manifest["sha256"] and first["losses"] == again["losses"]
    (last,) = first["losses"]
    assert last["step"] == 40 and all(math.isfinite(value) for value in last.values())
    assert first["learner"] == "rosmo" and first["settings"]["rosmo"]["hidden"] == [16]
    assert "crr" not in first["settings"]
    provenance = bundles[0].manifest["provenance"]
    assert provenance["learner"] == "rosmo" and provenance["learner_steps"] == 40
    assert "--learner rosmo" in provenance["command"]
    params = load_params_file(str(tmp_path / "a" / "params.yaml"))
    assert not any(key.startswith(("rosmo.", "crr.")) for key in params)
    assert params["task.bundle"] == str((tmp_path / "a" / "bundle").resolve())

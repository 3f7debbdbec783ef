"""Tiny torch modules implementing the bundle's ONNX contracts, with random weights.

They stand in for ``ensemble.planning_module()`` / ``sac.actor_module()`` /
``sac.critic_module()`` so the bundle and runtime tests do not depend on training code.
"""
from __future__ import annotations

import torch


def random_weights(sizes: tuple[int, ...], generator: torch.Generator, members: tuple[int, ...] = ()):
    """One weight per layer, ``(*members, n_in, n_out)``, scaled by 1/sqrt(n_in)."""
    return torch.nn.ParameterList(
        torch.nn.Parameter(torch.randn(*members, n_in, n_out, generator=generator) / n_in**0.5)
        for n_in, n_out in zip(sizes[:-1], sizes[1:])
    )


def run_mlp(weights, x, activation):
    for i, w in enumerate(weights):
        x = x @ w
        x = activation(x) if i < len(weights) - 1 else x
    return x


class TinyDynamics(torch.nn.Module):
    """state (K,B,S), action (K,B,A), noise (K,B,S) -> next_state (K,B,S), reward (K,B)."""

    def __init__(self, obs_dim: int, act_dim: int, ensemble_size: int, hidden: tuple[int, ...], seed: int):
        super().__init__()
        self.obs_dim = obs_dim
        sizes = (obs_dim + act_dim, *hidden, 2 * obs_dim + 1)
        self.weights = random_weights(sizes, torch.Generator().manual_seed(seed), (ensemble_size,))

    def forward(self, state, action, noise):
        out = run_mlp(self.weights, torch.cat([state, action], dim=-1), torch.tanh)  # batched matmul over K
        s = self.obs_dim
        mean, logvar, reward = out[..., :s], out[..., s:2 * s], out[..., -1]
        logvar = -4.0 + torch.nn.functional.softplus(logvar + 4.0)  # soft lower bound, as the real model
        return state + mean + torch.exp(0.5 * logvar) * noise, reward


class TinyActor(torch.nn.Module):
    """state (B,S), noise (B,A) -> action (B,A) = tanh(mu + exp(log_std) * noise), bounds [-1, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], seed: int):
        super().__init__()
        self.act_dim = act_dim
        self.weights = random_weights((obs_dim, *hidden, 2 * act_dim), torch.Generator().manual_seed(seed))

    def forward(self, state, noise):
        out = run_mlp(self.weights, state, torch.relu)
        mu, log_std = out[:, :self.act_dim], out[:, self.act_dim:].clamp(-5.0, 2.0)
        return torch.tanh(mu + torch.exp(log_std) * noise)


class TinyCritic(torch.nn.Module):
    """state (B,S), action (B,A) -> q (B,) = min(Q1, Q2)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.q1 = random_weights((obs_dim + act_dim, *hidden, 1), generator)
        self.q2 = random_weights((obs_dim + act_dim, *hidden, 1), generator)

    def forward(self, state, action):
        x = torch.cat([state, action], dim=-1)
        return torch.minimum(run_mlp(self.q1, x, torch.relu), run_mlp(self.q2, x, torch.relu))[:, 0]


def make_tiny_modules(obs_dim: int, act_dim: int, ensemble_size: int, hidden: tuple[int, ...] = (16,), seed: int = 0):
    """(dynamics, actor, critic) in eval mode, deterministic for a given seed."""
    return (
        TinyDynamics(obs_dim, act_dim, ensemble_size, hidden, seed).eval(),
        TinyActor(obs_dim, act_dim, hidden, seed + 1).eval(),
        TinyCritic(obs_dim, act_dim, hidden, seed + 2).eval(),
    )

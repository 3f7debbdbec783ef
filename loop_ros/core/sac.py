"""Soft actor-critic (paper Appendix C.2; Haarnoja et al. 2018), CleanRL-like.

Tanh-squashed Gaussian actor, twin Q critics with polyak-averaged targets and clipped
double-Q targets, temperature alpha learned towards a target entropy. The actor and the
critic modules are also the ``actor.onnx`` / ``critic.onnx`` graphs of a model bundle.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from loop_ros.core.config import CrrConfig, RosmoConfig, SacConfig

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
"""Range of the actor's log std (tanh-rescaled rather than clamped, so it keeps a gradient)."""


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """ReLU MLP (paper Appendix C.2)."""
    layers, width = [], in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, out_dim))


def squashed_gaussian_log_prob(u: torch.Tensor, mu: torch.Tensor, log_std: torch.Tensor,
                               action_scale: torch.Tensor) -> torch.Tensor:
    """log density of ``a = bias + scale*tanh(u)``, ``u ~ N(mu, exp(log_std)^2)``: (B, A) -> (B,).

    Change of variables: log p(a) = log N(u) - sum log|da/du|, da/du = scale * (1 - tanh(u)^2),
    with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) written so it stays finite
    for large |u| (no epsilon needed).
    """
    gaussian = -0.5 * ((u - mu) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    log_det = torch.log(action_scale) + 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return (gaussian - log_det).sum(dim=-1)


class TanhGaussianActor(nn.Module):
    """The ``actor.onnx`` graph: ``action = bias + scale * tanh(mu(s) + exp(log_std(s)) * noise)``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...],
                 action_low: np.ndarray, action_high: np.ndarray):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.net = mlp(obs_dim, hidden, 2 * act_dim)
        low, high = (torch.as_tensor(np.asarray(b, np.float32)) for b in (action_low, action_high))
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)

    def distribution(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) -> mu (B, A), log_std (B, A) of the pre-tanh Gaussian."""
        mu, raw_log_std = self.net(state).split([self.act_dim, self.act_dim], dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw_log_std) + 1.0)
        return mu, log_std

    def squash(self, u: torch.Tensor) -> torch.Tensor:
        """Pre-tanh sample (B, A) -> action within the bounds (B, A)."""
        return self.action_bias + self.action_scale * torch.tanh(u)

    def sample(self, state: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample: (B, S), (B, A) -> action (B, A), log_prob (B,)."""
        mu, log_std = self.distribution(state)
        u = mu + log_std.exp() * noise
        return self.squash(u), squashed_gaussian_log_prob(u, mu, log_std, self.action_scale)

    def forward(self, state: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(B, S), (B, A) -> action (B, A); noise = 0 gives the deterministic action."""
        mu, log_std = self.distribution(state)
        return self.squash(mu + log_std.exp() * noise)



class TwinQ(nn.Module):
    """Two independent Q networks; ``forward`` is the ``critic.onnx`` graph, min(Q1, Q2)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.q1 = mlp(obs_dim + act_dim, hidden, 1)
        self.q2 = mlp(obs_dim + act_dim, hidden, 1)

    def both(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S), (B, A) -> Q1 (B,), Q2 (B,)."""
        x = torch.cat([state, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """(B, S), (B, A) -> min(Q1, Q2) (B,): the clipped double-Q estimate."""
        return torch.minimum(*self.both(state, action))



@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- tau * source + (1 - tau) * target, parameter by parameter."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.lerp_(s, tau)


class ActorCriticLearner:
    """What the actor-critic learners (``Sac``, ``core/crr.py``'s ``Crr``, ``core/rosmo.py``'s ``Rosmo``) share:
    a tanh-Gaussian actor and twin Q critics with polyak targets, Adam on both. ``seed`` fixes the initial
    weights (drawn without touching torch's global generator) and the noise of the updates (``self.generator``)."""

    def __init__(self, obs_dim: int, act_dim: int, action_low: np.ndarray, action_high: np.ndarray,
                 cfg: SacConfig | CrrConfig | RosmoConfig, seed: int = 0, device: str | torch.device = "cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        with torch.random.fork_rng(devices=[]):  # seed the initial weights without touching global state
            torch.manual_seed(seed)
            self.actor = TanhGaussianActor(obs_dim, act_dim, cfg.hidden, action_low, action_high).to(self.device)
            self.critic = TwinQ(obs_dim, act_dim, cfg.hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)
        self.generator = torch.Generator(self.device).manual_seed(seed)

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, np.float32), device=self.device)

    def _batch(self, batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
        """batch: s (B, S), a (B, A), r (B,), s2 (B, S), d (B,) (1 where s2 is terminal) -> those tensors."""
        return tuple(self._tensor(batch[key]) for key in ("s", "a", "r", "s2", "d"))

    def _noise(self, *shape: int) -> torch.Tensor:
        """Standard normal actor noise (*shape, A) from the learner's own generator."""
        return torch.randn(*shape, self.actor.act_dim, generator=self.generator, device=self.device)

    @torch.no_grad()
    def act(self, state: np.ndarray, deterministic: bool, rng: np.random.Generator) -> np.ndarray:
        """(S,) -> action (A,): the actor's mean (deterministic) or a sample drawn with ``rng``."""
        noise = np.zeros(self.actor.act_dim) if deterministic else rng.standard_normal(self.actor.act_dim)
        action = self.actor(self._tensor(state)[None], self._tensor(noise)[None])
        return action[0].cpu().numpy()

    def _critic_step(self, state: torch.Tensor, action: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
        """One Adam step of both Q heads towards ``target`` (B,) (sum of their MSEs) -> (loss, mean Q1 before)."""
        q1, q2 = self.critic.both(state, action)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()
        return critic_loss.item(), q1.mean().item()

    def actor_module(self) -> TanhGaussianActor:
        """A copy of the actor (the ``actor.onnx`` graph), unaffected by later updates."""
        return copy.deepcopy(self.actor).eval().requires_grad_(False)

    def critic_module(self) -> TwinQ:
        """A copy of the online critics (the ``critic.onnx`` graph, min(Q1, Q2))."""
        return copy.deepcopy(self.critic).eval().requires_grad_(False)


class Sac(ActorCriticLearner):
    """SAC learner. ``seed`` fixes the initial weights and the noise of ``update``."""

    def __init__(self, obs_dim: int, act_dim: int, action_low: np.ndarray, action_high: np.ndarray,
                 cfg: SacConfig, seed: int = 0, device: str | torch.device = "cpu"):
        super().__init__(obs_dim, act_dim, action_low, action_high, cfg, seed, device)
        self.log_alpha = torch.tensor(math.log(cfg.init_alpha), device=self.device, requires_grad=True)
        self.target_entropy = cfg.target_entropy or -float(act_dim)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.lr)

    @property
    def alpha(self) -> float:
        return self.log_alpha.exp().item()

    @torch.no_grad()
    def td_target(self, reward: torch.Tensor, next_state: torch.Tensor, done: torch.Tensor,
                  noise: torch.Tensor) -> torch.Tensor:
        """Soft clipped double-Q target (B,): r + gamma (1 - d) (min_i Q'_i(s', a') - alpha log pi(a'|s')),
        a' = actor sample at s' with the given noise (B, A)."""
        next_action, next_log_prob = self.actor.sample(next_state, noise)
        next_q = self.critic_target(next_state, next_action) - self.log_alpha.exp() * next_log_prob
        return reward + self.cfg.gamma * (1.0 - done) * next_q

    def update(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """One gradient step on critics, actor and temperature, then the polyak step.

        batch: s (B, S), a (B, A), r (B,), s2 (B, S), d (B,) (1 where s2 is terminal).
        """
        s, a, r, s2, d = self._batch(batch)
        target = self.td_target(r, s2, d, self._noise(len(s)))
        critic_loss, q_mean = self._critic_step(s, a, target)

        action, log_prob = self.actor.sample(s, self._noise(len(s)))
        actor_loss = (self.log_alpha.exp().detach() * log_prob - self.critic(s, action)).mean()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()

        alpha_loss = -(self.log_alpha.exp() * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_optimizer.zero_grad()
        alpha_loss.backward()
        self.alpha_optimizer.step()

        polyak_update(self.critic_target, self.critic, self.cfg.tau)
        return {"critic_loss": critic_loss, "actor_loss": actor_loss.item(),
                "alpha_loss": alpha_loss.item(), "alpha": self.alpha, "entropy": -log_prob.mean().item(),
                "q_mean": q_mean}


class TransitionBuffer:
    """In-memory ring of transitions as float32 arrays (the trainer's working set;
    the persistent replay lives in rosbags, ``core/replay.py``)."""

    def __init__(self, obs_dim: int, act_dim: int, capacity: int):
        self.capacity, self.size, self.position = capacity, 0, 0
        self.data = {"s": np.zeros((capacity, obs_dim), np.float32), "a": np.zeros((capacity, act_dim), np.float32),
                     "r": np.zeros(capacity, np.float32), "s2": np.zeros((capacity, obs_dim), np.float32),
                     "d": np.zeros(capacity, np.float32)}

    def __len__(self) -> int:
        return self.size

    def add(self, s, a, r, s2, d) -> None:
        """Append one transition ((S,), (A,), scalar, (S,), scalar) or a batch with a leading axis n."""
        rows = {"s": s, "a": a, "r": r, "s2": s2, "d": d}
        n = np.size(r)
        index = ((self.position + np.arange(n)) % self.capacity)[-self.capacity:]  # a batch > capacity keeps its tail
        for key, value in rows.items():
            self.data[key][index] = np.reshape(value, (n, *self.data[key].shape[1:]))[-self.capacity:]
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Uniform sample with replacement: dict of s (B, S), a (B, A), r (B,), s2 (B, S), d (B,)."""
        index = rng.integers(self.size, size=batch_size)
        return {key: value[index] for key, value in self.data.items()}

    def arrays(self) -> dict[str, np.ndarray]:
        """Every stored transition (in storage order), e.g. to fit the dynamics ensemble."""
        return {key: value[:self.size] for key, value in self.data.items()}

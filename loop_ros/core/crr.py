"""Critic Regularized Regression (Wang et al. 2020, NeurIPS), the offline learner beside SAC.

CRR learns from a fixed dataset of transitions (s, a, r, s', d). The actor is trained by
weighted maximum likelihood of the dataset's own actions, so it never maximises the critic at
actions the data does not cover (the failure of off-policy actor-critics run offline); the
critic only decides how much each dataset action is imitated. With m = ``advantage_samples``
actions drawn from the actor pi and Q = min(Q1, Q2):

    critic   y = r + gamma (1 - d) (1/m) sum_j Q'(s', a'_j),  a'_j ~ pi(.|s'),  Q' the polyak targets
             L_Q = mean (Q1(s, a) - y)^2 + mean (Q2(s, a) - y)^2
    advantage  A(s, a) = Q(s, a) - (1/m) sum_j Q(s, a_j),  a_j ~ pi(.|s)   (online critics, no gradient)
    weight   binary: f = 1[A > 0];  exp: f = min(exp(A / temperature), max_weight)
    actor    L_pi = -mean f(A(s, a)) log pi(a|s)   (a: the dataset action)

The paper's critic is distributional (C51-like); this one is SAC's twin Q with the clipped
double-Q minimum, so the bundle's ``critic.onnx`` is the same graph whichever learner trained it.
As in ``Sac.update``, one update steps the critics first, then the actor with the updated
critics, then the targets. The actor and critics are ``core/sac.py``'s (``actor.onnx`` unchanged).
"""
from __future__ import annotations

import numpy as np
import torch

from loop_ros.core.config import CrrConfig
from loop_ros.core.sac import ActorCriticLearner, TanhGaussianActor, TwinQ, polyak_update, squashed_gaussian_log_prob

SQUASH_EPS = 1e-6
"""Dataset actions are pulled this far (in units of half the action range) inside the bounds before
atanh: an action at a bound has atanh(+-1) = +-inf. In float32 1 - 1e-6 is still about 17 steps of
the float spacing below 1 (1e-8 would round to 1.0), and atanh(1 - 1e-6) = 7.25 keeps the log-prob
and its gradient finite without saturating tanh so far that the actor's mean stops learning."""


def advantage_weights(advantages: torch.Tensor, weighting: str, temperature: float,
                      max_weight: float) -> torch.Tensor:
    """CRR's f(A): 'binary' 1[A > 0], 'exp' min(exp(A / temperature), max_weight), elementwise."""
    if weighting == "binary":
        return (advantages > 0).to(advantages.dtype)
    if weighting == "exp":
        return torch.exp(advantages / temperature).clamp(max=max_weight)  # exp overflow to inf is clipped too
    raise ValueError(f"unknown CRR weighting {weighting!r}")


def dataset_log_prob(actor: TanhGaussianActor, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) of given actions under the actor's tanh-squashed Gaussian: (B, S), (B, A) -> (B,).

    Inverts the squash, u = atanh((a - bias) / scale), clipped ``SQUASH_EPS`` inside +-1.
    """
    mu, log_std = actor.distribution(state)
    unit = ((action - actor.action_bias) / actor.action_scale).clamp(-1.0 + SQUASH_EPS, 1.0 - SQUASH_EPS)
    return squashed_gaussian_log_prob(torch.atanh(unit), mu, log_std, actor.action_scale)


class OfflineActorCritic(ActorCriticLearner):
    """What the offline learners (``Crr``, ``core/rosmo.py``'s ``Rosmo``) share: the policy's state value
    estimated with m actor samples, and the critics' TD target built from it (``cfg.gamma``)."""

    def _policy_value(self, critic: TwinQ, state: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(1/m) sum_j critic(s, a_j), a_j = actor sample at s with noise[j]: (B, S), (m, B, A) -> (B,)."""
        states = state.expand(len(noise), *state.shape)
        return critic(states, self.actor(states, noise)).mean(dim=0)

    @torch.no_grad()
    def td_target(self, reward: torch.Tensor, next_state: torch.Tensor, done: torch.Tensor,
                  noise: torch.Tensor) -> torch.Tensor:
        """y = r + gamma (1 - d) (1/m) sum_j min_i Q'_i(s', a'_j) (B,); noise (m, B, A) draws the a'_j."""
        return reward + self.cfg.gamma * (1.0 - done) * self._policy_value(self.critic_target, next_state, noise)


class Crr(OfflineActorCritic):
    """CRR learner, ``Crr(obs_dim, act_dim, action_low, action_high, cfg: CrrConfig, seed=0, device='cpu')``.
    ``seed`` fixes the initial weights and the actor samples of ``update``."""

    cfg: CrrConfig

    @torch.no_grad()
    def advantage(self, state: torch.Tensor, action: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """A(s, a) = Q(s, a) - (1/m) sum_j Q(s, a_j) (B,), online min(Q1, Q2); noise (m, B, A) draws the a_j."""
        return self.critic(state, action) - self._policy_value(self.critic, state, noise)

    def update(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """One gradient step on critics and actor, then the polyak step.

        batch: s (B, S), a (B, A), r (B,), s2 (B, S), d (B,) (1 where s2 is terminal).
        """
        s, a, r, s2, d = self._batch(batch)
        m = self.cfg.advantage_samples
        critic_loss, q_mean = self._critic_step(s, a, self.td_target(r, s2, d, self._noise(m, len(s))))

        advantage = self.advantage(s, a, self._noise(m, len(s)))
        weight = advantage_weights(advantage, self.cfg.weighting, self.cfg.temperature, self.cfg.max_weight)
        actor_loss = -(weight * dataset_log_prob(self.actor, s, a)).mean()
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()

        polyak_update(self.critic_target, self.critic, self.cfg.tau)
        return {"critic_loss": critic_loss, "actor_loss": actor_loss.item(), "q_mean": q_mean,
                "advantage_mean": advantage.mean().item(), "weight_mean": weight.mean().item(),
                "positive_advantage_fraction": (advantage > 0).float().mean().item()}

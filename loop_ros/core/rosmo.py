"""ROSMO (Liu et al. 2023, ICLR, "Efficient Offline Policy Optimization with a Learned Model"), adapted to
continuous actions: the offline learner beside CRR that looks one step ahead through the learned model.

ROSMO replaces MuZero's tree search by a one-step lookahead: actions drawn from the policy (the prior)
are stepped once through the learned model, their one-step values compared, and the policy regressed
towards the prior reweighted by those advantages, with a behaviour-cloning term that keeps it near the
data. Here the model is LOOP's fitted dynamics ensemble (``EnsembleDynamics``, K members, noise 0: each
member's mean), the value is the twin-Q critic. At each dataset state s, with Q = min(Q1, Q2), Q' its
polyak targets, N = ``lookahead_samples``, M = ``value_samples``, T = ``temperature``:

    critic     y = r + gamma (1 - d) (1/M) sum_j Q'(s', a'_j),  a'_j ~ pi(.|s')   (the dataset transition;
               L_Q = mean (Q1(s, a) - y)^2 + mean (Q2(s, a) - y)^2       ``OfflineActorCritic``, as CRR's)
    lookahead  a_i ~ pi(.|s), i = 1..N;   (s'_i, r_i) = (1/K) sum_k g_k(s, a_i, noise 0)
               q_i = r_i + gamma V(s'_i),  V(s') = (1/M) sum_j Q'(s', a'_j),  a'_j ~ pi(.|s')
    advantage  adv_i = q_i - (1/N) sum_l q_l
    target     w_i = 1[adv_i > 0] exp(adv_i / T) / sum_l 1[adv_l > 0] exp(adv_l / T)   (all 0 if no adv_l > 0)
    actor      L_pi = mean_s [ -sum_i w_i log pi(a_i|s) ] + bc_weight mean_(s,a) [ -log pi(a|s) ]   (a: dataset action)

The a_i, q_i and w_i carry no gradient (no gradient flows through the model or the critics into the
target); both log-probs are ``core/crr.py``'s ``dataset_log_prob`` (the a_i lie inside the bounds).
As in ``Crr.update``, one update steps the critics, then the actor, then the targets; the bundle's
``actor.onnx`` and ``critic.onnx`` are the same graphs whichever learner trained them.

What differs from the paper (MuZero-style: discrete actions, a latent model learned jointly with the
policy and value heads by unrolling it along the data):

* continuous actions: the improved policy pi_prior(a|s) exp(adv(s, a)) / Z(s) is represented by N prior
  samples with self-normalised weights (as the paper's sampled estimate of its policy loss, a^(i) ~ pi_prior),
  and the actor (a tanh-Gaussian) is fitted to them by weighted maximum likelihood;
* the model is the separately fitted ensemble in raw state space, frozen while the learner runs (Alg. 2
  of LOOP fits it first); it predicts no termination, so every imagined s'_i is bootstrapped;
* the advantage's baseline is the mean of the N sampled one-step values, not a value head's v(s) (a bias
  of the model's reward or of V shared by the samples cancels); it has a temperature T;
* "advantage filtering": only samples better than that mean enter the target (the paper filters its
  behaviour term instead, -log pi(a|s) H(adv(s, a)) of the dataset action; here that term is unfiltered
  and weighted by ``bc_weight``);
* the value is a twin-Q critic learned by one-step TD (the paper: a value head, n-step returns). As in
  the paper, the lookahead's values come from the target network (here Q'), the prior is the current actor.
"""
from __future__ import annotations

import numpy as np
import torch

from loop_ros.core.config import RosmoConfig
from loop_ros.core.crr import OfflineActorCritic, dataset_log_prob
from loop_ros.core.sac import polyak_update


def improvement_weights(advantages: torch.Tensor, temperature: float) -> torch.Tensor:
    """w_i = softmax_i(adv_i / T) over the samples with adv_i > 0, 0 elsewhere: (N, B) -> (N, B), over axis 0.

    A column with no positive advantage is all 0 (its state contributes nothing to the target)."""
    positive = advantages > 0
    logits = advantages / temperature
    shifted = logits - logits.max(dim=0, keepdim=True).values  # the largest is positive wherever any is
    exp = torch.where(positive, torch.exp(shifted), torch.zeros_like(shifted))
    total = exp.sum(dim=0, keepdim=True)
    return torch.where(total > 0, exp / total.clamp(min=torch.finfo(exp.dtype).tiny), torch.zeros_like(exp))


class Rosmo(OfflineActorCritic):
    """ROSMO learner, ``Rosmo(obs_dim, act_dim, action_low, action_high, cfg: RosmoConfig, dynamics, seed=0,
    device='cpu')``. ``dynamics`` is the model looked ahead through: an ``EnsembleDynamics`` (the fitted
    ensemble's planning module) or any module with its call, (K, B, S), (K, B, A), noise (K, B, S) ->
    next_state (K, B, S), reward (K, B), and its ``ensemble_size``, ``obs_dim`` and ``act_dim``; it is not
    trained. ``seed`` fixes the initial weights and the actor samples of ``update``."""

    cfg: RosmoConfig

    def __init__(self, obs_dim: int, act_dim: int, action_low: np.ndarray, action_high: np.ndarray,
                 cfg: RosmoConfig, dynamics: torch.nn.Module, seed: int = 0, device: str | torch.device = "cpu"):
        if (dynamics.obs_dim, dynamics.act_dim) != (obs_dim, act_dim):
            raise ValueError(f"the dynamics model is for obs_dim {dynamics.obs_dim}, act_dim {dynamics.act_dim}; "
                             f"the learner for {obs_dim}, {act_dim}")
        super().__init__(obs_dim, act_dim, action_low, action_high, cfg, seed, device)
        self.dynamics = dynamics

    @torch.no_grad()
    def lookahead(self, state: torch.Tensor, action_noise: torch.Tensor,
                  value_noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The prior's samples and their one-step values: state (B, S), action_noise (N, B, A) draws the a_i,
        value_noise (M, N, B, A) the a'_j at each s'_i -> a_i (N, B, A), q_i = r_i + gamma V(s'_i) (N, B),
        (s'_i, r_i) the mean of the K members at noise 0, V(s') = (1/M) sum_j min_i Q'_i(s', a'_j)."""
        n, batch = action_noise.shape[:2]
        states = state.expand(n, *state.shape)
        actions = self.actor(states, action_noise)
        k = self.dynamics.ensemble_size
        flat_states = states.reshape(1, n * batch, -1).expand(k, -1, -1)
        flat_actions = actions.reshape(1, n * batch, -1).expand(k, -1, -1)
        next_state, reward = self.dynamics(flat_states, flat_actions, torch.zeros_like(flat_states))
        next_value = self._policy_value(self.critic_target, next_state.mean(dim=0),
                                        value_noise.reshape(len(value_noise), n * batch, -1))
        return actions, (reward.mean(dim=0) + self.cfg.gamma * next_value).reshape(n, batch)

    def actor_losses(self, state: torch.Tensor, action: torch.Tensor, samples: torch.Tensor,
                     weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two terms of L_pi, with gradient to the actor: state (B, S), dataset action (B, A), the
        lookahead's a_i (N, B, A) and w_i (N, B) -> mean_s -sum_i w_i log pi(a_i|s), mean -log pi(a|s)."""
        improvement = -(weight * dataset_log_prob(self.actor, state.expand(len(samples), *state.shape), samples))
        return improvement.sum(dim=0).mean(), -dataset_log_prob(self.actor, state, action).mean()

    def update(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """One gradient step on critics and actor, then the polyak step.

        batch: s (B, S), a (B, A), r (B,), s2 (B, S), d (B,) (1 where s2 is terminal).
        """
        s, a, r, s2, d = self._batch(batch)
        n, m, size = self.cfg.lookahead_samples, self.cfg.value_samples, len(s)
        critic_loss, q_mean = self._critic_step(s, a, self.td_target(r, s2, d, self._noise(m, size)))

        actions, values = self.lookahead(s, self._noise(n, size), self._noise(m, n, size))
        advantage = values - values.mean(dim=0)
        weight = improvement_weights(advantage, self.cfg.temperature)
        improvement_loss, bc_loss = self.actor_losses(s, a, actions, weight)
        actor_loss = improvement_loss + self.cfg.bc_weight * bc_loss
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()

        polyak_update(self.critic_target, self.critic, self.cfg.tau)
        return {"critic_loss": critic_loss, "actor_loss": actor_loss.item(), "q_mean": q_mean,
                "improvement_loss": improvement_loss.item(), "bc_loss": bc_loss.item(),
                "lookahead_value_mean": values.mean().item(), "advantage_std": advantage.std().item(),
                "positive_advantage_fraction": (advantage > 0).float().mean().item(),
                "improved_state_fraction": (weight.sum(dim=0) > 0).float().mean().item()}

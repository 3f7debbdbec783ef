"""Literal loop transcription of ARC (Alg. 3) and safeARC (Alg. 4), for testing the batched planner.

Same conventions and same pre-drawn ``PlanNoise`` as ``arc.ArcPlanner``; one model call per
member, particle, candidate and step. Slow by design: it exists to be obviously right.

Return of one rollout (``_return``, Eq. 3 with termination), r_t = r(s_t, a_t, s_{t+1}):
  'discounted': sum_{t<H} gamma^t alive_t r_t + gamma^H alive_H Q(s_H, pi(s_H))
  'authors'   : sum_{t<H-1} alive_t r_t + alive_{H-1} Q(s_{H-1}, a_{H-1})   (undiscounted)
  no value    : sum_{t<H} gamma^t alive_t r_t
alive_0 = 1, alive_{t+1} = alive_t * (1 - terminated(s_{t+1})). Costs are never masked.
"""
from __future__ import annotations

import math

import numpy as np

from loop_ros.core.arc import PlanNoise
from loop_ros.core.config import ArcConfig, SafetyConfig, TerminalValue


def _member_step(model, k, s, a, eps):
    """One step of member k from one state: s (S,), a (A,), eps (S,) -> (s' (S,), r)."""
    K = model.ensemble_size
    states = np.tile(np.asarray(s, np.float32), (K, 1, 1))
    actions = np.tile(np.asarray(a, np.float32), (K, 1, 1))
    noise = np.tile(np.asarray(eps, np.float32), (K, 1, 1))
    nxt, rew = model.dynamics(states, actions, noise)
    return nxt[k, 0], float(rew[k, 0])


def _mean_step(model, s, a):
    """Ensemble-mean step used to roll the actor prior."""
    total = 0.0
    for k in range(model.ensemble_size):
        total = total + _member_step(model, k, s, a, np.zeros_like(s))[0]
    return total / model.ensemble_size


def _actor(model, s, eps):
    return model.actor(np.asarray(s, np.float32)[None], np.asarray(eps, np.float32)[None])[0]


def _q(model, s, a):
    return float(model.critic(np.asarray(s, np.float32)[None], np.asarray(a, np.float32)[None])[0])


def _return(rewards, alive, q, gamma, terminal):
    """Eq. 3 with termination, one rollout: rewards r_0..r_{H-1}, alive_0..alive_H, q (see the module docstring)."""
    H = len(rewards)
    R = 0.0
    if terminal == TerminalValue.AUTHORS:
        for t in range(H - 1):
            if alive[t]:
                R += rewards[t]
        if alive[H - 1]:
            R += q
        return R
    for t in range(H):
        if alive[t]:
            R += gamma**t * rewards[t]
    if terminal == TerminalValue.DISCOUNTED and alive[H]:
        R += gamma**H * q
    return R


def _rollout(model, task, arc, safety, k, s0, actions, noise_of_step):
    """Return R and cost C of one action sequence under member k, one particle (Alg. 3 l.16-21, Alg. 4 l.22)."""
    H = len(actions)
    terminal = arc.terminal if arc.use_terminal_value else TerminalValue.NONE
    rewards, alive, q, C, s = [], [True], None, 0.0, s0
    for t in range(H):
        a = actions[t]
        s_next, r_model = _member_step(model, k, s, a, noise_of_step(t))
        rewards.append(r_model if task.reward_from_model else float(task.reward(s, a, s_next)))
        if terminal == TerminalValue.AUTHORS and t == H - 1:
            q = _q(model, s, a)
        if safety.enabled:
            C += arc.gamma**t * float(task.cost(s_next, safety))
        alive.append(alive[t] and not bool(task.terminated(s_next)))
        s = s_next
    if terminal == TerminalValue.DISCOUNTED:
        q = _q(model, s, _actor(model, s, np.zeros(len(actions[0]))))
    return _return(rewards, alive, q, arc.gamma, terminal), C


def _weights(values, temperature, arc, mask):
    idx = [i for i in range(len(values)) if mask[i]]
    w = [0.0] * len(values)
    if arc.weighting == "elite":
        ranked = sorted(idx, key=lambda i: (-values[i], i))[: arc.n_elites]
        for i in ranked:
            w[i] = 1.0 / len(ranked)
        return w
    top = max(values[i] for i in idx)
    for i in idx:
        w[i] = math.exp((values[i] - top) / temperature)
    total = sum(w)
    return [x / total for x in w]


def arc_reference(model, task, arc: ArcConfig, safety: SafetyConfig, state, previous_mean, noise: PlanNoise):
    """Final sampling mean (H, A) and the last iteration's (candidates, weights, n_feasible)."""
    H, N, P, K = arc.horizon, arc.population, arc.particles, model.ensemble_size
    low, high = np.asarray(task.action_low, float), np.asarray(task.action_high, float)
    A = len(low)
    if previous_mean is None:
        mu = np.array([[(low[d] + high[d]) / 2 for d in range(A)] for _ in range(H)])
    else:
        mu = np.array([previous_mean[min(t + 1, H - 1)] for t in range(H)])  # shifted warm start
    var = np.array([[(arc.sigma * (high[d] - low[d]) / 2) ** 2 for d in range(A)] for _ in range(H)])
    n_actor = int(round(arc.beta * N))

    # Actor prior: sampled once per plan through the ensemble-mean model (Alg. 3 l.9-10).
    actor_seqs = []
    for j in range(n_actor):
        s, seq = np.asarray(state, np.float32), []
        for t in range(H):
            a = _actor(model, s, noise.actor[t, j])
            seq.append(a)
            s = _mean_step(model, s, a)
        actor_seqs.append(seq)

    for i in range(arc.iterations):
        cands, R, C = [], [], []
        for j in range(N):
            if j < n_actor:
                seq = [np.asarray(a, float) for a in actor_seqs[j]]
            else:
                g = noise.gaussian[i, j - n_actor]
                seq = [np.clip(mu[t] + np.sqrt(var[t]) * g[t], low, high) for t in range(H)]
            cands.append(seq)
            member_means, worst = [], -math.inf
            for k in range(K):
                total = 0.0
                for p in range(P):
                    Rkp, Ckp = _rollout(model, task, arc, safety, k, np.asarray(state, np.float32), seq,
                                        lambda t: noise.dynamics[i, t, k, p * N + j])
                    total += Rkp
                    worst = max(worst, Ckp)
                member_means.append(total / P)
            score = sum(member_means) / K
            if arc.beta_pess > 0:
                score -= arc.beta_pess * math.sqrt(sum((x - score) ** 2 for x in member_means) / K)
            R.append(score)
            C.append(worst)
        if safety.enabled:
            feasible = [c <= safety.d0 for c in C]
            n_feasible = sum(feasible)
            if n_feasible < safety.min_safe:
                w = _weights([-c for c in C], safety.eta_cost, arc, [True] * N)
            else:
                w = _weights(R, arc.eta, arc, feasible)
        else:
            n_feasible = N
            w = _weights(R, arc.eta, arc, [True] * N)
        mu_new = sum(w[j] * np.asarray(cands[j]) for j in range(N))
        var_new = sum(w[j] * (np.asarray(cands[j]) - mu_new) ** 2 for j in range(N))
        mu = arc.alpha_mean * mu_new + (1 - arc.alpha_mean) * mu
        var = arc.alpha_var * var_new + (1 - arc.alpha_var) * var
    return mu, np.asarray(cands), np.asarray(w), n_feasible

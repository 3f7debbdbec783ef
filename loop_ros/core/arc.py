"""Actor Regularized Control (ARC, Alg. 3) and safeARC (Alg. 4), batched.

Paper symbols -> names here: H horizon, N population, P particles, K ensemble members,
beta mixture ratio (``n_actor = round(beta*N)`` candidates roll the actor through the
model), eta temperature, alpha smoothing (``alpha_mean`` / ``alpha_var``), d0 threshold,
m ``min_safe``, beta_pess pessimism.

Return of a candidate under member k, particle p (``candidate_returns``, Eq. 3 with termination;
the kind of terminal value is ``terminal_kind``), with r_t = r(s_t, a_t, s_{t+1}):
  DISCOUNTED: sum_{t<H} gamma^t alive_t r_t + gamma^H alive_H Q(s_H, pi(s_H))
  AUTHORS   : sum_{t<H-1} alive_t r_t + alive_{H-1} Q(s_{H-1}, a_{H-1})   (undiscounted, Q replaces r_{H-1})
  NONE      : sum_{t<H} gamma^t alive_t r_t
alive_0 = 1 (the current state), alive_{t+1} = alive_t * (1 - terminated(s_{t+1})) (``Task.terminated``):
the step that falls still earns its reward, as in the env; nothing after it counts, the critic's
value behind a fall neither.
Worst-case cost of a candidate: max over k, p of sum_{t<H} gamma^t c(s_{t+1}), never masked (a plan
through a fall must not look safer); the current state's cost is the same for every candidate,
so it is left out.

All randomness of one plan is drawn up front (``draw_plan_noise``) so this planner and
the literal loop transcription in ``arc_reference.py`` can be compared exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from loop_ros.core.config import ArcConfig, SafetyConfig, TerminalValue, controller_arc_config, controller_safety
from loop_ros.core.planning_model import FusedRolloutModel, PlanningModel
from loop_ros.core.tasks.base import Task


@dataclass
class PlanNoise:
    """Every random number of one plan (float32 standard normals unless stated)."""

    actor: np.ndarray  # (H, n_actor, A) actor sampling noise of the actor-prior candidates
    gaussian: np.ndarray  # (I, N - n_actor, H, A) Gaussian-prior candidates, per iteration
    dynamics: np.ndarray  # (I, H, K, P*N, S) model noise; column b = p*N + j (particle p of candidate j)
    pick: float  # uniform [0, 1) used to draw the exploration trajectory by weight


@dataclass
class PlanResult:
    action: np.ndarray  # (A,) action to execute now
    mean_actions: np.ndarray  # (H, A) final sampling mean (the warm start of the next plan)
    metrics: dict = field(default_factory=dict)


def draw_plan_noise(rng: np.random.Generator, arc: ArcConfig, ensemble_size: int, obs_dim: int, act_dim: int) -> PlanNoise:
    H, N, P, I, n_actor = arc.horizon, arc.population, arc.particles, arc.iterations, arc.n_actor
    return PlanNoise(
        actor=standard_normal(rng, (H, n_actor, act_dim)),
        gaussian=standard_normal(rng, (I, N - n_actor, H, act_dim)),
        dynamics=standard_normal(rng, (I, H, ensemble_size, P * N, obs_dim)),
        pick=float(rng.random()),
    )


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float32 standard normals, by the Box-Muller transform of float32 uniforms.

    A paper-halfcheetah plan draws 0.5 M of them: numpy's float32 ziggurat took 4.4 ms on the
    dev VM, this 1.6 ms (numpy's log, sqrt, cos and sin are vectorised). The uniforms'
    2^-24 resolution caps a pair's radius at 5.77 (a true normal pair exceeds it w.p. 6e-8).
    """
    n = math.prod(shape)
    half = (n + 1) // 2
    u = rng.random((2, half), dtype=np.float32)
    radius = np.sqrt(-2.0 * np.log1p(-u[0]))  # 1 - u is in (0, 1]
    angle = np.float32(2 * np.pi) * u[1]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n].reshape(shape)


def stepwise_rollout(model: PlanningModel, state, actions, noise, terminal: TerminalValue):
    """One dynamics call per step (any PlanningModel); a ``FusedRolloutModel`` does the same in one run.

    state (K,B,S), actions (H,K,B,A), noise (H,K,B,S) -> states (H,K,B,S) = s_1..s_H,
    model rewards (H,K,B), q (K,B): Q(s_H, pi(s_H)) for DISCOUNTED, Q(s_{H-1}, a_{H-1}) for AUTHORS, None for NONE.
    """
    H = len(actions)
    K, B, S = state.shape
    s, states, rewards, q = state, [], [], None
    for t in range(H):
        if terminal == TerminalValue.AUTHORS and t == H - 1:
            q = model.critic(s.reshape(K * B, S), actions[t].reshape(K * B, -1)).reshape(K, B)
        s, r = model.dynamics(s, actions[t], noise[t])
        states.append(s)
        rewards.append(r)
    if terminal == TerminalValue.DISCOUNTED:
        flat = s.reshape(K * B, S)
        pi = model.actor(flat, np.zeros((K * B, actions.shape[-1]), np.float32))
        q = model.critic(flat, pi).reshape(K, B)
    return np.stack(states), np.stack(rewards), q


def alive_mask(task: Task, states: np.ndarray) -> np.ndarray:
    """alive (H+1, ...) bool of states s_1..s_H (H, ..., S): alive_0 = True (the current state, from
    which we plan, has not ended), alive_{t+1} = alive_t and not terminated(s_{t+1})."""
    fell = np.asarray(task.terminated(states), dtype=bool)
    alive = np.logical_and.accumulate(~fell, axis=0)
    return np.concatenate([np.ones_like(alive[:1]), alive])


def candidate_returns(rewards: np.ndarray, alive: np.ndarray, q: np.ndarray | None, gamma: float,
                      terminal: TerminalValue) -> np.ndarray:
    """Eq. 3 with termination, per rollout: rewards (H, ...) r_t, alive (H+1, ...) bool, q (...) -> (...).

    DISCOUNTED: sum_{t<H} gamma^t alive_t r_t + gamma^H alive_H Q(s_H, pi(s_H))
    AUTHORS:    sum_{t<H-1} alive_t r_t + alive_{H-1} Q(s_{H-1}, a_{H-1})   (Alg. 3 l.20, undiscounted)
    NONE:       sum_{t<H} gamma^t alive_t r_t
    Masked by ``where``, not by a product: a model that diverges after a fall (inf, NaN) cannot
    leak into the return through 0 * inf.
    """
    H = len(rewards)
    earned = np.where(alive[:H], rewards, np.float32(0))
    if terminal == TerminalValue.AUTHORS:
        return earned[:H - 1].sum(axis=0) + np.where(alive[H - 1], q, np.float32(0))
    returns = np.tensordot(gamma ** np.arange(H, dtype=np.float32), earned, axes=1)
    if terminal == TerminalValue.DISCOUNTED:
        returns = returns + np.float32(gamma**H) * np.where(alive[H], q, np.float32(0))
    return returns


def shifted_warm_start(previous_mean: np.ndarray) -> np.ndarray:
    """Shift the previous plan one step and repeat its last action. (H, A) -> (H, A)."""
    return np.concatenate([previous_mean[1:], previous_mean[-1:]], axis=0)


def softmax_weights(values: np.ndarray, temperature: float, mask: np.ndarray | None = None) -> np.ndarray:
    """softmax(values / temperature) over the entries where mask is True (others weigh 0)."""
    z = values / temperature
    if mask is not None:
        z = np.where(mask, z, -np.inf)
    z = z - z.max()
    w = np.exp(z)
    return w / w.sum()


def elite_weights(values: np.ndarray, n_elites: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Uniform weights over the n_elites highest values (among mask), as in CEM."""
    z = values if mask is None else np.where(mask, values, -np.inf)
    n = min(n_elites, int(np.isfinite(z).sum()))
    top = np.argsort(-z, kind="stable")[:n]
    w = np.zeros_like(values)
    w[top] = 1.0 / n
    return w


def candidate_weights(score: np.ndarray, worst_cost: np.ndarray | None, arc: ArcConfig, safety: SafetyConfig):
    """Importance weights of the N candidates and the number of feasible ones (Alg. 3 l.27, Alg. 4 l.29-38)."""

    def weigh(values, temperature, mask=None):
        if arc.weighting == "elite":
            return elite_weights(values, arc.n_elites, mask)
        return softmax_weights(values, temperature, mask)

    if worst_cost is None:
        return weigh(score, arc.eta), len(score)
    feasible = worst_cost <= safety.d0
    n_feasible = int(feasible.sum())
    if n_feasible < safety.min_safe:
        return weigh(-worst_cost, safety.eta_cost), n_feasible
    return weigh(score, arc.eta, feasible), n_feasible


def terminal_kind(arc: ArcConfig) -> TerminalValue:
    """The terminal value a planner with these settings adds: ``arc.terminal``, NONE without a value."""
    return arc.terminal if arc.use_terminal_value else TerminalValue.NONE


def fused_graph_key(arc: ArcConfig, controller: str) -> tuple[int, TerminalValue] | None:
    """(horizon, terminal kind) of the fused graphs a planner with these settings composes (None: none)."""
    if controller == "actor":
        return None
    return arc.horizon, terminal_kind(controller_arc_config(controller, arc))


class ArcPlanner:
    """Batched ARC / safeARC over a ``PlanningModel`` (``planning_model.py``) and a ``Task``."""

    def __init__(self, model: PlanningModel, task: Task, arc: ArcConfig, safety: SafetyConfig, controller: str = "arc"):
        self.model, self.task, self.controller = model, task, controller
        self.base_arc = arc
        self.arc = controller_arc_config(controller, arc)
        self.safety = controller_safety(controller, safety)
        self.low = np.asarray(task.action_low, dtype=np.float32)
        self.high = np.asarray(task.action_high, dtype=np.float32)
        self.init_std = np.float32(self.arc.sigma) * (self.high - self.low) / 2
        self.mean: np.ndarray | None = None  # warm start (H, A)
        self.fused = isinstance(model, FusedRolloutModel)  # one call per iteration instead of one per step
        key = fused_graph_key(arc, controller)
        if self.fused and key is not None:
            model.prepare(*key)  # compose fused graphs now, not mid-plan

    def with_settings(self, arc: ArcConfig | None = None, safety: SafetyConfig | None = None) -> "ArcPlanner":
        """A planner with new settings on the same model; keeps the warm start when the shape allows."""
        new = ArcPlanner(self.model, self.task, arc or self.base_arc, safety or self.safety, self.controller)
        if self.mean is not None and new.arc.horizon == self.arc.horizon:
            new.mean = self.mean.copy()
        return new

    def with_model(self, model) -> "ArcPlanner":
        new = ArcPlanner(model, self.task, self.base_arc, self.safety, self.controller)
        new.mean = self.mean
        return new

    def reset(self) -> None:
        self.mean = None

    # ---------------------------------------------------------------- one plan
    def plan(self, state: np.ndarray, rng: np.random.Generator, explore: bool = False,
             noise: PlanNoise | None = None) -> PlanResult:
        """Plan from ``state (S,)``; ``explore`` returns the first action of a trajectory drawn by weight."""
        state = np.asarray(state, dtype=np.float32)
        if self.controller == "actor":
            return self._actor_action(state, rng, explore)
        arc, m = self.arc, self.model
        if noise is None:
            noise = draw_plan_noise(rng, arc, m.ensemble_size, m.obs_dim, m.act_dim)
        mean = self._initial_mean()
        var = np.broadcast_to(self.init_std**2, mean.shape).astype(np.float32)
        actor_sequences = self.actor_prior(state, noise.actor)
        for i in range(arc.iterations):
            candidates = self.sample_candidates(mean, np.sqrt(var), actor_sequences, noise.gaussian[i])
            returns, costs = self.evaluate(state, candidates, noise.dynamics[i])
            score = self.score(returns)
            worst = costs.max(axis=(0, 1)) if self.safety.enabled else None
            weights, n_feasible = candidate_weights(score, worst, arc, self.safety)
            mean_new = np.einsum("n,nha->ha", weights, candidates)
            var_new = np.einsum("n,nha->ha", weights, (candidates - mean_new) ** 2)
            mean = arc.alpha_mean * mean_new + (1 - arc.alpha_mean) * mean
            var = arc.alpha_var * var_new + (1 - arc.alpha_var) * var
        if not np.all(np.isfinite(mean)):
            self.mean = None  # kept, a non-finite warm start would make every later plan non-finite too
            raise FloatingPointError("the plan's mean is not finite (a model output or a return was not)")
        self.mean = mean.astype(np.float32)
        return self._result(candidates, weights, score, worst, n_feasible, explore, noise.pick)

    def _initial_mean(self) -> np.ndarray:
        H, A = self.arc.horizon, len(self.low)
        if self.mean is None or self.mean.shape != (H, A):
            return np.broadcast_to((self.low + self.high) / 2, (H, A)).astype(np.float32)
        return shifted_warm_start(self.mean)

    def _result(self, candidates, weights, score, worst, n_feasible, explore, pick) -> PlanResult:
        metrics = {"n_feasible": n_feasible, "all_infeasible": False, "best_score": float(score.max())}
        if worst is not None and n_feasible == 0:
            metrics["all_infeasible"] = True
            # 'min_cost': the mean after Alg. 4 l.30, every candidate weighted by softmax(-cost/eta_cost)
            brake = self.safety.fallback == "brake"
            action = self.task.safe_action().astype(np.float32) if brake else self.mean[0].copy()
            return PlanResult(action, self.mean, metrics)
        if explore:
            j = min(int(np.searchsorted(np.cumsum(weights), pick * weights.sum(), side="right")), len(weights) - 1)
            return PlanResult(candidates[j, 0].copy(), self.mean, metrics)
        return PlanResult(self.mean[0].copy(), self.mean, metrics)

    def _actor_action(self, state, rng, explore) -> PlanResult:
        eps = rng.standard_normal((1, len(self.low)), dtype=np.float32) if explore else np.zeros((1, len(self.low)), np.float32)
        action = np.clip(self.model.actor(state[None], eps)[0], self.low, self.high)
        return PlanResult(action, np.broadcast_to(action, (self.arc.horizon, len(action))).copy(), {})

    # ---------------------------------------------------------------- the pieces of Alg. 3
    def actor_prior(self, state: np.ndarray, actor_noise: np.ndarray) -> np.ndarray:
        """Roll the actor through the ensemble-mean model: (n_actor, H, A) action sequences.

        Drawn once per plan and reused by every iteration (mixture prior in the population).
        """
        H, n_actor = actor_noise.shape[:2]
        K, S = self.model.ensemble_size, len(state)
        sequences = np.empty((n_actor, H, len(self.low)), dtype=np.float32)
        if n_actor == 0:
            return sequences
        if self.fused:
            return self.model.actor_rollout(state[None].repeat(n_actor, axis=0), actor_noise).transpose(1, 0, 2)
        s = np.repeat(state[None], n_actor, axis=0).astype(np.float32)
        zeros = np.zeros((K, n_actor, S), dtype=np.float32)
        for t in range(H):
            a = self.model.actor(s, actor_noise[t])
            sequences[:, t] = a
            s_next, _ = self.model.dynamics(np.repeat(s[None], K, axis=0), np.repeat(a[None], K, axis=0), zeros)
            s = s_next.mean(axis=0)
        return sequences

    def sample_candidates(self, mean, std, actor_sequences, gaussian_noise) -> np.ndarray:
        """Population (N, H, A): the actor sequences first, then clip(mean + std * noise); every
        candidate lies in the action bounds (the actor's too: a bundle's actor is not trusted to)."""
        gaussian = np.clip(mean + std * gaussian_noise, self.low, self.high)
        actor = np.clip(actor_sequences, self.low, self.high)
        return np.concatenate([actor, gaussian.astype(np.float32)], axis=0)

    def terminal_kind(self) -> TerminalValue:
        return terminal_kind(self.arc)

    def evaluate(self, state: np.ndarray, candidates: np.ndarray, dynamics_noise: np.ndarray):
        """Returns (K, P, N) and discounted costs (K, P, N) of each candidate under each member and particle.

        dynamics_noise: (H, K, P*N, S); rollout column b = p*N + j.
        """
        arc, task, m = self.arc, self.task, self.model
        N, H, A = candidates.shape
        K, P, S = m.ensemble_size, arc.particles, len(state)
        s0 = np.ascontiguousarray(np.broadcast_to(state, (K, P * N, S)), dtype=np.float32)
        # (H, K, P*N, A): step t's actions as one contiguous block, column b = p*N + j
        per_step = np.broadcast_to(candidates.transpose(1, 0, 2)[:, None, None], (H, K, P, N, A))
        actions = np.ascontiguousarray(per_step).reshape(H, K, P * N, A)
        terminal = self.terminal_kind()
        rollout = m.rollout if self.fused else partial(stepwise_rollout, m)
        states, model_rewards, q = rollout(s0, actions, dynamics_noise, terminal)
        if task.reward_from_model:
            rewards = model_rewards
        else:
            rewards = task.reward(np.concatenate([s0[None], states[:-1]]), actions, states)
        # masked here, from the returned states, so the stepwise and fused rollouts share it
        returns = candidate_returns(rewards, alive_mask(task, states), q, arc.gamma, terminal)
        costs = np.zeros((K, P * N), np.float32)
        if self.safety.enabled:  # unmasked: a plan through a fall is never made to look safer
            discounts = arc.gamma ** np.arange(H, dtype=np.float32)
            costs = np.tensordot(discounts, task.cost(states, self.safety), axes=1)
        return returns.reshape(K, P, N), costs.reshape(K, P, N)

    def score(self, returns: np.ndarray) -> np.ndarray:
        """mean over K*P minus beta_pess * std over the K member means: (K, P, N) -> (N,)."""
        member_means = returns.mean(axis=1)
        score = member_means.mean(axis=0)
        if self.arc.beta_pess > 0:
            score = score - self.arc.beta_pess * member_means.std(axis=0)
        return score

    def predict_states(self, state: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """States (H+1, S) of an action sequence (H, A) through the ensemble mean (the plan view, delay compensation)."""
        K, S = self.model.ensemble_size, len(state)
        s = np.asarray(state, dtype=np.float32)
        states = [s]
        zeros = np.zeros((K, 1, S), dtype=np.float32)
        for a in np.asarray(actions, dtype=np.float32):
            nxt, _ = self.model.dynamics(np.tile(s, (K, 1, 1)), np.tile(a, (K, 1, 1)), zeros)
            s = nxt.mean(axis=0)[0]
            states.append(s)
        return np.stack(states)

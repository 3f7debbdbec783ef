"""ARC / safeARC: batched planner vs the literal loop transcription, hand-built costs, closed loop."""
import dataclasses
import json

import numpy as np
import pytest

import math

from loop_ros.core.arc import (ArcPlanner, draw_plan_noise, fused_graph_key, shifted_warm_start, standard_normal,
                               terminal_kind)
from loop_ros.core.arc_reference import arc_reference
from loop_ros.core.config import ArcConfig, ConfigError, SafetyConfig, TerminalValue
from loop_ros.core.params_file import from_params
from loop_ros.core.planning_model import FusedRolloutModel, PlanningModel
from loop_ros.core.tasks import make_task
from loop_ros.core.tasks.point_mass import PointMassModel, PointMassTask, point_mass_step


class ActionValueModel(PointMassModel):
    """PointMassModel with a critic that depends on the action and an actor that depends on the whole
    state, so a return that takes Q at the wrong action (a_{H-1} for pi(s_H), or the reverse) or at the
    wrong state changes, and the planner no longer matches the reference."""

    def actor(self, state, noise):
        mu = 3.0 * (self.actor_target - state[..., :2]) - 2.0 * state[..., 2:]
        return np.tanh(mu + 0.3 * noise).astype(np.float32)

    def critic(self, state, action):
        best = np.tanh(2.0 * (self.goal - state[..., :2]) - state[..., 2:])
        distance = np.linalg.norm(state[..., :2] - self.goal, axis=-1)
        return (-distance - 2.0 * np.sum((action - best) ** 2, axis=-1)).astype(np.float32)

SMALL = ArcConfig(horizon=3, population=12, particles=2, iterations=3, beta=0.25, eta=0.05,
                  alpha_mean=0.7, alpha_var=0.6, sigma=0.5, gamma=0.9)
VARIANTS = {
    "arc": (SMALL, SafetyConfig()),
    "authors-terminal": (dataclasses.replace(SMALL, terminal="authors"), SafetyConfig()),
    "pessimism": (dataclasses.replace(SMALL, beta_pess=2.0), SafetyConfig()),
    # loop-ros offline's ARC (commands/offline.py OFFLINE_ARC): every candidate from the actor, one iteration
    "offline": (dataclasses.replace(SMALL, beta=1.0, iterations=1, beta_pess=1.0), SafetyConfig()),
    "offline-safe": (dataclasses.replace(SMALL, beta=1.0, iterations=1, beta_pess=1.0),
                     SafetyConfig(enabled=True, keep_in_radius=0.6, min_safe=2)),
    "cem-elite-no-value": (dataclasses.replace(SMALL, beta=0.0, weighting="elite", n_elites=4,
                                               use_terminal_value=False), SafetyConfig()),
    "safe-enough-feasible": (SMALL, SafetyConfig(enabled=True, keep_in_radius=0.6, min_safe=2)),
    "safe-too-few-feasible": (SMALL, SafetyConfig(enabled=True, keep_in_radius=0.6, min_safe=12)),
    "safe-authors": (dataclasses.replace(SMALL, terminal="authors"), SafetyConfig(enabled=True, keep_in_radius=0.6)),
}


def plan_and_reference(task, arc, safety):
    """One batched plan and the literal reference's, from one state, warm start and noise:
    (plan result, reference's (mean, candidates, weights, n_feasible), (model, state, previous, noise))."""
    model = ActionValueModel(noise_std=0.05)
    state = np.array([0.5, 0.1, 0.1, -0.05], np.float32)
    previous = np.random.default_rng(1).uniform(-1, 1, (arc.horizon, 2)).astype(np.float32)
    noise = draw_plan_noise(np.random.default_rng(7), arc, model.ensemble_size, 4, 2)
    planner = ArcPlanner(model, task, arc, safety)
    planner.mean = previous.copy()
    result = planner.plan(state, rng=None, noise=noise)
    reference = arc_reference(model, task, arc, safety, state, previous, noise)
    return result, reference, (model, state, previous, noise)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_batched_planner_equals_literal_reference(name):
    arc, safety = VARIANTS[name]
    result, (ref_mean, _, ref_weights, ref_feasible), _ = plan_and_reference(make_task("point_mass"), arc, safety)

    np.testing.assert_allclose(result.mean_actions, ref_mean, atol=1e-5)
    np.testing.assert_allclose(result.action, ref_mean[0], atol=1e-5)
    assert result.metrics["n_feasible"] == ref_feasible
    assert not result.metrics["all_infeasible"]
    if name == "safe-too-few-feasible":  # the branch must really be exercised
        assert 0 < ref_feasible < 12
    if name == "safe-enough-feasible":
        assert 2 <= ref_feasible < 12


class FallingPointMass(PointMassTask):
    """The point mass falls (its episode ends, as a Hopper's does) once x passes ``edge``."""

    def __init__(self, edge, reward_from_model=False):
        super().__init__()
        self.edge, self.reward_from_model = edge, reward_from_model

    def terminated(self, next_state):
        return next_state[..., 0] > self.edge


FALL_CASES = [(terminal, from_model) for terminal in ("discounted", "authors", "none") for from_model in (False, True)]


def _arc_with(terminal: str) -> ArcConfig:
    if terminal == "none":
        return dataclasses.replace(SMALL, use_terminal_value=False)
    return dataclasses.replace(SMALL, terminal=terminal)


@pytest.mark.parametrize("terminal,reward_from_model", FALL_CASES)
def test_batched_planner_equals_literal_reference_through_falls(terminal, reward_from_model):
    """From x = 0.5 with model noise 0.05, a part of the rollouts passes x = 0.55 at each step: the
    mask cuts their returns at different steps (and so tells alive_H from alive_{H-1})."""
    arc, safety = _arc_with(terminal), SafetyConfig(enabled=True, keep_in_radius=0.6)
    result, (ref_mean, _, _, ref_feasible), inputs = plan_and_reference(FallingPointMass(0.55, reward_from_model),
                                                                        arc, safety)
    np.testing.assert_allclose(result.mean_actions, ref_mean, atol=1e-5)
    assert result.metrics["n_feasible"] == ref_feasible
    # the falls matter: planning as if nothing fell gives another plan
    model, state, previous, noise = inputs
    never_falls = FallingPointMass(np.inf, reward_from_model)
    standing, *_ = arc_reference(model, never_falls, arc, safety, state, previous, noise)
    assert np.abs(standing - ref_mean).max() > 1e-3


@pytest.mark.parametrize("terminal,reward_from_model", [("discounted", False), ("authors", True)])
def test_fused_onnx_rollout_stops_at_falls_as_the_reference(terminal, reward_from_model, export_tiny_bundle):
    """The fused graph returns the states; the planner masks in numpy. x of the tiny model's rollouts
    spreads around 0.7 at every step, so about half of them fall at some step."""
    from loop_ros.core.bundle import read_bundle
    from loop_ros.core.config import RuntimeConfig
    from loop_ros.core.runtime import OrtPlanningModel

    arc, safety = _arc_with(terminal), SafetyConfig()
    model = OrtPlanningModel(read_bundle(export_tiny_bundle(obs_dim=4, act_dim=2, task="point_mass")), RuntimeConfig())
    task, state = FallingPointMass(0.7, reward_from_model), np.array([0.5, 0.1, 0.1, -0.05], np.float32)
    noise = draw_plan_noise(np.random.default_rng(7), arc, model.ensemble_size, 4, 2)
    planner = ArcPlanner(model, task, arc, safety)
    assert planner.fused and isinstance(model, FusedRolloutModel)
    result = planner.plan(state, rng=None, noise=noise)
    ref_mean, *_ = arc_reference(model, task, arc, safety, state, None, noise)
    np.testing.assert_allclose(result.mean_actions, ref_mean, atol=1e-5)
    standing, *_ = arc_reference(model, FallingPointMass(np.inf, reward_from_model), arc, safety, state, None, noise)
    assert np.abs(standing - ref_mean).max() > 1e-3


def test_a_candidate_that_falls_at_step_1_earns_its_first_reward_only():
    # The hand arithmetic of test_discounted_return_matches_hand_arithmetic (H=2, gamma=0.5, s0 = 0, exact
    # model), with a fall at x > 0.005. Candidate a=(1,0): x1 = 0.01 falls, so R = r0 = -0.99 - 0.01 = -1.0
    # in both conventions (not r1, not Q behind the fall). Candidate a=(-1,0): x1 = -0.01, x2 = -0.03 stand:
    # r0 = -1.01 - 0.01 = -1.02, r1 = -1.03 - 0.01 = -1.04, Q(s, .) = -|p - goal|.
    #   discounted: -1.02 + 0.5 * -1.04 + 0.25 * Q(s2, pi(s2)) = -1.02 - 0.52 - 0.2575 = -1.7975
    #   authors:    r0 + Q(s1, a1) = -1.02 - 1.01 = -2.03
    arc = ArcConfig(horizon=2, population=2, particles=1, iterations=1, beta=0.0, gamma=0.5)
    model = PointMassModel(ensemble_size=1, noise_std=0.0, member_spread=0.0)
    cands = np.array([[[1.0, 0.0]] * 2, [[-1.0, 0.0]] * 2], np.float32)
    for terminal, standing in (("discounted", -1.7975), ("authors", -2.03)):
        arc = dataclasses.replace(arc, terminal=terminal)
        planner = ArcPlanner(model, FallingPointMass(0.005), arc, SafetyConfig())
        returns, _ = planner.evaluate(np.zeros(4, np.float32), cands, np.zeros((2, 1, 2, 4), np.float32))
        np.testing.assert_allclose(returns[0, 0], [-1.0, standing], atol=1e-5)


class CliffValueModel(PointMassModel):
    """Exact dynamics and a critic that values x: the land past the cliff looks best of all."""

    def critic(self, state, action):
        return (10.0 * state[..., 0]).astype(np.float32)


def test_the_planner_does_not_plan_over_the_cliff_for_the_value_behind_it():
    # From x = 0.9 at 0.3 m/s, H = 3: x3 = 0.99 + 0.01 (3 a0 + 2 a1 + a2) (x1, x2 <= 0.99), so a plan falls
    # off the edge x = 1 at step 3 iff 3 a0 + 2 a1 + a2 > 1, where Q = 10 x3 would pay the most.
    arc = ArcConfig(horizon=3, population=200, particles=1, iterations=3, beta=0.0, eta=0.1)
    model = CliffValueModel(ensemble_size=1, noise_std=0.0, member_spread=0.0)
    state = np.array([0.9, 0.0, 0.3, 0.0], np.float32)

    def planned_x(task):
        planner = ArcPlanner(model, task, arc, SafetyConfig())
        result = planner.plan(state, np.random.default_rng(0))
        return planner.predict_states(state, result.mean_actions)[1:, 0]

    assert planned_x(FallingPointMass(1.0)).max() <= 1.0 + 1e-5
    assert planned_x(FallingPointMass(np.inf)).max() > 1.01  # without the fall the critic does pull over


def test_terminal_value_enum_takes_the_strings_users_write():
    assert ArcConfig().terminal is TerminalValue.DISCOUNTED
    assert ArcConfig(terminal="authors").terminal is TerminalValue.AUTHORS
    assert from_params({"arc.terminal": "authors"})["arc"].terminal is TerminalValue.AUTHORS
    assert dataclasses.replace(ArcConfig(), terminal="authors") == ArcConfig(terminal=TerminalValue.AUTHORS)
    for bad in ("none", "next", "last", None):  # no value is use_terminal_value false; the old kinds are gone
        with pytest.raises(ConfigError, match="arc.terminal must be one of"):
            ArcConfig(terminal=bad)
    # a str: equal, hashed, printed and serialised as the string
    assert TerminalValue.AUTHORS == "authors" and {"authors": 1}[TerminalValue.AUTHORS] == 1
    assert f"{TerminalValue.AUTHORS}" == "authors" and json.dumps(TerminalValue.AUTHORS) == '"authors"'
    # the kind the planner and the fused-graph cache use
    assert terminal_kind(ArcConfig(terminal="authors")) is TerminalValue.AUTHORS
    assert terminal_kind(ArcConfig(terminal="authors", use_terminal_value=False)) is TerminalValue.NONE
    assert fused_graph_key(ArcConfig(horizon=4), "arc") == (4, TerminalValue.DISCOUNTED)
    assert fused_graph_key(ArcConfig(horizon=4), "cem") == (4, TerminalValue.NONE)
    assert fused_graph_key(ArcConfig(horizon=4), "actor") is None


def test_models_are_told_apart_by_protocol():
    model = PointMassModel()
    assert isinstance(model, PlanningModel) and not isinstance(model, FusedRolloutModel)
    assert not ArcPlanner(model, make_task("point_mass"), SMALL, SafetyConfig()).fused


def test_standard_normal_has_the_normal_moments_and_tails():
    z = standard_normal(np.random.default_rng(0), (1001, 999))  # an odd count: one pair is cut
    assert z.shape == (1001, 999) and z.dtype == np.float32
    flat = z.ravel()
    assert abs(flat.mean()) < 0.005 and abs(flat.std() - 1.0) < 0.005
    # P(|z| > k) of N(0, 1), within 5 % of it (k = 3: 2700 of 1 M expected, so ~2 % noise)
    for k in (1.0, 2.0, 3.0):
        np.testing.assert_allclose((np.abs(flat) > k).mean(), math.erfc(k / math.sqrt(2)), rtol=0.05)
    # the two halves (cosine and sine) are uncorrelated
    half = flat.size // 2
    assert abs(np.corrcoef(flat[:half], flat[half:2 * half])[0, 1]) < 0.005
    np.testing.assert_array_equal(z, standard_normal(np.random.default_rng(0), (1001, 999)))


def test_shifted_warm_start_repeats_last_action():
    prev = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(shifted_warm_start(prev), [[2, 3], [4, 5], [4, 5]])


def test_discounted_return_matches_hand_arithmetic():
    # Deterministic model (no noise, no offsets), H=2, gamma=0.5, one candidate a=(1,0) at every step.
    # s0 = 0: v1 = 0.1, p1 = 0.01; v2 = 0.2, p2 = 0.03 (x only); goal (1,0).
    # r_t = -|p_{t+1} - goal| - 0.01*|a|^2: r0 = -0.99 - 0.01, r1 = -0.97 - 0.01.
    # terminal: gamma^2 * Q(s2, pi(s2)) with Q = -|p - goal| = -0.97.
    # R = -1.0 + 0.5 * -0.98 + 0.25 * -0.97 = -1.7325
    arc = ArcConfig(horizon=2, population=2, particles=1, iterations=1, beta=0.0, gamma=0.5)
    model = PointMassModel(ensemble_size=1, noise_std=0.0, member_spread=0.0)
    planner = ArcPlanner(model, make_task("point_mass"), arc, SafetyConfig())
    cands = np.tile(np.array([1.0, 0.0], np.float32), (2, 2, 1))
    returns, _ = planner.evaluate(np.zeros(4, np.float32), cands, np.zeros((2, 1, 2, 4), np.float32))
    np.testing.assert_allclose(returns[0, 0], [-1.7325, -1.7325], atol=1e-5)
    # The authors' convention: r0 + Q(s1, a1) undiscounted = -1.0 + -0.99 = -1.99
    planner = ArcPlanner(model, make_task("point_mass"), dataclasses.replace(arc, terminal="authors"), SafetyConfig())
    returns, _ = planner.evaluate(np.zeros(4, np.float32), cands, np.zeros((2, 1, 2, 4), np.float32))
    np.testing.assert_allclose(returns[0, 0], [-1.99, -1.99], atol=1e-5)


def _safe_planner(radius, **safety):
    # One step from x = 1.0 moving out at 1 m/s: x' = 1 + 0.1*(1 + 0.1*ax) = 1.1 + 0.01*ax in [1.09, 1.11].
    arc = ArcConfig(horizon=1, population=50, particles=1, iterations=1, beta=0.0, gamma=1.0)
    model = PointMassModel(ensemble_size=2, noise_std=0.0, member_spread=0.0)
    cfg = SafetyConfig(enabled=True, keep_in_radius=radius, **safety)
    return ArcPlanner(model, make_task("point_mass"), arc, cfg)


STATE_OUT = np.array([1.0, 0.0, 1.0, 0.0], np.float32)


def test_safe_arc_enough_feasible_keeps_only_safe_candidates():
    # radius 1.1: feasible iff 1.1 + 0.01*ax <= 1.1 (y stays 0), i.e. ax <= 0: about half the candidates.
    planner = _safe_planner(1.1, min_safe=5)
    result = planner.plan(STATE_OUT, np.random.default_rng(0))
    assert 5 <= result.metrics["n_feasible"] < 50
    assert result.action[0] <= 1e-6  # a weighted mean of feasible candidates only
    assert not result.metrics["all_infeasible"]


def test_safe_arc_too_few_feasible_weighs_by_cost():
    # Same geometry but m = 50 > feasible count: weights softmax(-cost/eta_c), so mean ax is pulled negative
    # (all feasible candidates weigh e^(1/eta_c) times more) yet infeasible ones still count.
    planner = _safe_planner(1.1, min_safe=50, eta_cost=0.5)
    rng = np.random.default_rng(0)
    noise = draw_plan_noise(rng, planner.arc, 2, 4, 2)
    cands = planner.sample_candidates(planner._initial_mean(), planner.init_std, np.empty((0, 1, 2), np.float32),
                                      noise.gaussian[0])
    feasible = cands[:, 0, 0] <= 0
    w = np.where(feasible, np.exp(0.0), np.exp(-1.0 / 0.5))
    expected = (w[:, None] * cands[:, 0]).sum(0) / w.sum()
    result = planner.plan(STATE_OUT, None, noise=noise)
    assert 0 < result.metrics["n_feasible"] < 50
    np.testing.assert_allclose(result.action, expected, atol=1e-5)


def _closed_loop(planner, steps=40, seed=0):
    rng = np.random.default_rng(seed)
    s = np.zeros(4, np.float32)
    for _ in range(steps):
        a = planner.plan(s, rng).action
        s = point_mass_step(s, np.clip(a, -1, 1)).astype(np.float32)
    return float(np.linalg.norm(s[:2] - [1.0, 0.0]))


def test_arc_reaches_goal_where_the_actor_alone_fails():
    # The actor drives to (-1, 0), the wrong way; the critic values closeness to the goal (1, 0).
    model, task = PointMassModel(noise_std=0.01, actor_target=(-1.0, 0.0)), make_task("point_mass")
    arc = ArcConfig(horizon=5, population=100, particles=2, iterations=3, beta=0.05, eta=0.1)
    arc_distance = _closed_loop(ArcPlanner(model, task, arc, SafetyConfig()))
    actor_distance = _closed_loop(ArcPlanner(model, task, arc, SafetyConfig(), controller="actor"))
    assert arc_distance < 0.15
    assert actor_distance > 1.0


def test_explore_draws_a_candidate_by_weight():
    model, task = PointMassModel(), make_task("point_mass")
    planner = ArcPlanner(model, task, SMALL, SafetyConfig())
    noise = draw_plan_noise(np.random.default_rng(3), SMALL, 3, 4, 2)
    result = planner.plan(np.zeros(4, np.float32), None, explore=True, noise=noise)
    _, cands, weights, _ = arc_reference(model, task, SMALL, SafetyConfig(), np.zeros(4, np.float32), None, noise)
    j = np.searchsorted(np.cumsum(weights), noise.pick, side="right")
    np.testing.assert_allclose(result.action, cands[j, 0], atol=1e-5)


@pytest.mark.parametrize("name", ["arc", "authors-terminal", "cem-elite-no-value", "safe-too-few-feasible"])
def test_fused_onnx_rollout_equals_literal_reference(name, export_tiny_bundle):
    """The fused ONNX graphs (one session run per iteration) against Alg. 3/4 looped over the same bundle."""
    from loop_ros.core.bundle import read_bundle
    from loop_ros.core.config import RuntimeConfig
    from loop_ros.core.runtime import OrtPlanningModel

    arc, safety = VARIANTS[name]
    model = OrtPlanningModel(read_bundle(export_tiny_bundle(obs_dim=4, act_dim=2, task="point_mass")), RuntimeConfig())
    task, state = make_task("point_mass"), np.array([0.5, 0.1, 0.1, -0.05], np.float32)
    noise = draw_plan_noise(np.random.default_rng(7), arc, model.ensemble_size, 4, 2)
    planner = ArcPlanner(model, task, arc, safety)
    result = planner.plan(state, rng=None, noise=noise)
    ref_mean, _, _, ref_feasible = arc_reference(model, task, arc, safety, state, None, noise)
    np.testing.assert_allclose(result.mean_actions, ref_mean, atol=1e-5)
    assert result.metrics["n_feasible"] == ref_feasible


class RecordingPlanner(ArcPlanner):
    """Records (mean, std, candidates) of every sample_candidates call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def sample_candidates(self, mean, std, actor_sequences, gaussian_noise):
        candidates = super().sample_candidates(mean, std, actor_sequences, gaussian_noise)
        self.calls.append((np.array(mean), np.broadcast_to(std, mean.shape).copy(), candidates.copy()))
        return candidates


def test_sigma_is_reset_every_plan():
    """Each plan's Gaussian prior starts at std arc.sigma * (high - low) / 2 around the shifted previous
    mean, whatever variance the previous plan ended with."""
    task, model = make_task("point_mass"), ActionValueModel(noise_std=0.05)
    planner = RecordingPlanner(model, task, SMALL, SafetyConfig())
    init_std = SMALL.sigma * (task.action_high - task.action_low) / 2
    np.testing.assert_allclose(init_std, [0.5, 0.5])
    state = np.array([0.5, 0.1, 0.1, -0.05], np.float32)
    rng = np.random.default_rng(11)
    first = planner.plan(state, None, noise=draw_plan_noise(rng, SMALL, model.ensemble_size, 4, 2))
    # within a plan the variance does shrink: a carried-over variance would show in the next plan
    assert len(planner.calls) == SMALL.iterations
    assert np.all(planner.calls[-1][1] < 0.8 * init_std)
    for _ in range(2):  # two more plans: each one starts afresh
        previous = planner.mean.copy()
        noise = draw_plan_noise(rng, SMALL, model.ensemble_size, 4, 2)
        planner.calls.clear()
        result = planner.plan(state, None, noise=noise)
        mean, std, candidates = planner.calls[0]
        np.testing.assert_array_equal(std, np.broadcast_to(init_std, std.shape).astype(np.float32))
        np.testing.assert_array_equal(mean, shifted_warm_start(previous))
        expected = np.clip(shifted_warm_start(previous) + init_std * noise.gaussian[0], -1.0, 1.0)
        np.testing.assert_allclose(candidates[SMALL.n_actor:], expected, atol=1e-6)
        # and the whole plan equals the reference, which starts every plan at sigma
        ref_mean, *_ = arc_reference(model, task, SMALL, SafetyConfig(), state, previous, noise)
        np.testing.assert_allclose(result.mean_actions, ref_mean, atol=1e-5)
    assert not np.allclose(first.mean_actions, result.mean_actions)


class BrakingPointMass(PointMassTask):
    """A safe action no plan mean is likely to produce."""

    def safe_action(self):
        return np.array([-0.75, 0.25])


def _all_infeasible_planner(fallback):
    # From x = 1, vx = 0.5, H = 2: x1 = 1.05 + 0.01*ax0 is inside the 1.05 circle iff ax0 <~ 0 and
    # x2 >= 1.07 is outside for every candidate: worst-case costs gamma or 1 + gamma, none feasible.
    arc = ArcConfig(horizon=2, population=40, particles=2, iterations=3, beta=0.1, eta=0.05,
                    alpha_mean=0.7, alpha_var=0.6, sigma=0.5, gamma=0.9)
    safety = SafetyConfig(enabled=True, keep_in_radius=1.05, min_safe=3, eta_cost=0.3, fallback=fallback)
    model = PointMassModel(ensemble_size=2, noise_std=0.0, member_spread=0.0)
    return ArcPlanner(model, BrakingPointMass(), arc, safety), arc, safety, model


STATE_LEAVING = np.array([1.0, 0.0, 0.5, 0.0], np.float32)


def test_min_cost_fallback_is_the_cost_weighted_mean_computed_by_hand():
    planner, arc, safety, model = _all_infeasible_planner("min_cost")
    noise = draw_plan_noise(np.random.default_rng(5), arc, model.ensemble_size, 4, 2)
    result = planner.plan(STATE_LEAVING, None, noise=noise)
    assert result.metrics["all_infeasible"] and result.metrics["n_feasible"] == 0

    # Alg. 4 by hand, in float64: the model is the exact dynamics (no offsets, no noise), so every
    # member and particle has the same cost and the worst case is that cost.
    actor = []  # the actor prior through the ensemble-mean (= exact) model, drawn once
    for j in range(arc.n_actor):
        s, seq = STATE_LEAVING.astype(np.float64), []
        for t in range(arc.horizon):
            a = np.tanh(2.0 * (model.actor_target - s[:2]) - s[2:] + 0.3 * noise.actor[t, j])
            seq.append(a)
            s = point_mass_step(s, a)
        actor.append(seq)
    mean = np.zeros((2, 2))
    var = np.full((2, 2), (0.5 * 1.0) ** 2)
    margins, distinct_costs = [], set()
    for i in range(arc.iterations):
        gaussian = np.clip(mean + np.sqrt(var) * noise.gaussian[i], -1.0, 1.0)
        candidates = np.concatenate([np.asarray(actor), gaussian])
        cost = np.zeros(arc.population)
        s = np.broadcast_to(STATE_LEAVING.astype(np.float64), (arc.population, 4))
        for t in range(arc.horizon):
            s = point_mass_step(s, candidates[:, t])
            radius = np.linalg.norm(s[:, :2], axis=1)
            margins.append(np.abs(radius - 1.05).min())
            cost += arc.gamma**t * (radius > 1.05)
        assert np.all(cost > safety.d0)  # none feasible in any iteration: weights softmax(-cost/eta_cost)
        distinct_costs |= set(np.round(cost, 6))
        w = np.exp(-(cost - cost.min()) / safety.eta_cost)
        w /= w.sum()
        mean_new = np.einsum("n,nha->ha", w, candidates)
        var_new = np.einsum("n,nha->ha", w, (candidates - mean_new) ** 2)
        mean = arc.alpha_mean * mean_new + (1 - arc.alpha_mean) * mean
        var = arc.alpha_var * var_new + (1 - arc.alpha_var) * var
    assert min(margins) > 1e-4  # no candidate on the circle: float32 and float64 agree on every cost
    assert distinct_costs == {0.9, 1.9}  # the weights are not uniform
    np.testing.assert_allclose(result.action, mean[0], atol=1e-6)
    np.testing.assert_allclose(result.mean_actions, mean, atol=1e-6)
    ref_mean, *_ = arc_reference(model, planner.task, arc, safety, STATE_LEAVING, None, noise)
    np.testing.assert_allclose(result.action, ref_mean[0], atol=1e-6)


def test_brake_fallback_is_the_tasks_safe_action():
    planner, arc, _, model = _all_infeasible_planner("brake")
    noise = draw_plan_noise(np.random.default_rng(5), arc, model.ensemble_size, 4, 2)
    result = planner.plan(STATE_LEAVING, None, noise=noise)
    assert result.metrics["all_infeasible"]
    np.testing.assert_array_equal(result.action, planner.task.safe_action())
    assert result.action.dtype == np.float32


class UnboundedActorModel(PointMassModel):
    """A model whose actor commands 5x the bounds, and, once ``poisoned``, whose dynamics return NaN."""

    poisoned = False

    def actor(self, state, noise):
        return np.full((len(state), 2), 5.0, np.float32)

    def dynamics(self, state, action, noise):
        next_state, reward = super().dynamics(state, action, noise)
        return (next_state * np.nan, reward) if self.poisoned else (next_state, reward)


def test_every_candidate_and_the_actor_controller_stay_within_the_bounds():
    model, task = UnboundedActorModel(), make_task("point_mass")
    planner = RecordingPlanner(model, task, SMALL, SafetyConfig())
    planner.plan(np.zeros(4, np.float32), np.random.default_rng(0))
    assert planner.calls
    for _, _, candidates in planner.calls:
        assert np.all(candidates >= task.action_low) and np.all(candidates <= task.action_high)
    action = ArcPlanner(model, task, SMALL, SafetyConfig(), "actor").plan(np.zeros(4, np.float32),
                                                                          np.random.default_rng(0)).action
    np.testing.assert_array_equal(action, task.action_high)


def test_a_non_finite_plan_raises_and_forgets_the_warm_start():
    """Kept, a NaN mean would be the next plan's warm start, and every later plan would be NaN too."""
    model, task = UnboundedActorModel(), make_task("point_mass")
    planner = ArcPlanner(model, task, SMALL, SafetyConfig())
    planner.plan(np.zeros(4, np.float32), np.random.default_rng(0))
    assert planner.mean is not None
    model.poisoned = True
    with pytest.raises(FloatingPointError):
        planner.plan(np.zeros(4, np.float32), np.random.default_rng(1))
    assert planner.mean is None
    model.poisoned = False
    assert np.all(np.isfinite(planner.plan(np.zeros(4, np.float32), np.random.default_rng(2)).mean_actions))

"""The trainer's gate on its models (``core/model_gate.py``): the verdict's rules, and real
evaluations in the RC car's simulator of the shipped model against a model that cannot drive."""
from __future__ import annotations

import shutil

import pytest

from loop_ros.core.model_gate import NO_REFERENCE, ModelGate, gate_verdict
from loop_ros.core.tasks import make_task
from loop_ros.settings import data_path, load_params


def figures(mean_return=100.0, crashes=0, mean_cost=0.0, episodes=3):
    return {"mean_return": mean_return, "crashes": crashes, "mean_cost": mean_cost,
            "violations_per_episode": float(mean_cost > 0), "episodes": episodes}


@pytest.mark.parametrize("candidate, passed, why", [
    (figures(), True, "mean return 100.0"),
    (figures(mean_return=90.0), True, "mean return 90.0"),  # exactly at the floor: 10 % below
    (figures(mean_return=89.9), False, "below 90.0"),
    (figures(mean_return=500.0, crashes=1), False, "crashed in 1 of 3"),
    (figures(mean_return=500.0, mean_cost=0.5), False, "0.5 steps per episode in violation"),
])
def test_a_candidate_must_crash_violate_no_more_and_return_no_less_than_the_tolerance_allows(candidate, passed, why):
    verdict, reason = gate_verdict(candidate, figures(), 0.1)
    assert verdict is passed and why in reason


def test_a_negative_reference_return_allows_the_tolerance_below_it_too():
    assert gate_verdict(figures(mean_return=-109.0), figures(mean_return=-100.0), 0.1)[0]
    assert not gate_verdict(figures(mean_return=-111.0), figures(mean_return=-100.0), 0.1)[0]


def rc_car_gate(reference_bundle, episodes=1):
    task = make_task("rc_car")
    params = load_params(task, overrides=["runtime.intra_op_threads=1"])  # config/rc_car.yaml, as the planner runs
    return ModelGate(task, "arc", params, episodes, 0.1, seed=0, reference_bundle=reference_bundle)


def never():
    return False


def test_a_model_that_cannot_drive_is_refused_and_the_reference_stays_the_starting_bundle(tmp_path, export_tiny_bundle):
    """Real episodes, as the planner would drive them. A random untrained model is refused against the
    shipped one; a copy of the shipped model passes with the same figures (the same starts and noise: a
    paired comparison), and the reference stays the starting bundle."""
    shipped = data_path("models/rc_car")
    gate = rc_car_gate(shipped)
    untrained = export_tiny_bundle(task="rc_car", name="untrained")
    refused = gate.judge(untrained, never)
    assert not refused.passed and "crashed in 1 of 1" in refused.reason
    assert refused.reference["crashes"] == 0 and refused.reference["mean_return"] > 300
    copy = shutil.copytree(shipped, tmp_path / "copy")
    passed = gate.judge(copy, never)
    assert passed.passed and passed.candidate["mean_return"] == passed.reference["mean_return"]
    assert passed.reference is refused.reference and str(shipped) in gate.reference_note  # evaluated once, kept


def test_a_stop_ends_the_evaluation_within_one_plan_and_gives_no_verdict(export_tiny_bundle):
    """The trainer stops within its grace period even mid-episode (one rc_car episode takes 5-20 s)."""
    untrained = export_tiny_bundle(task="rc_car", name="untrained")
    gate, checks = rc_car_gate(data_path("models/rc_car")), []

    def stop_at_the_51st_plan():
        checks.append(True)
        return len(checks) > 50

    assert gate.judge(untrained, stop_at_the_51st_plan) is None and len(checks) == 51  # mid-way through the reference
    assert not gate.judge(untrained, never).passed  # the next call evaluates the reference whole, then the candidate


def test_without_a_starting_bundle_every_model_passes_unevaluated(tmp_path, export_tiny_bundle):
    untrained = export_tiny_bundle(task="rc_car", name="untrained")
    gate = rc_car_gate(tmp_path / "absent")  # as up --fresh gives it: the trainer's own bundle, not there yet
    result = gate.judge(untrained, never)
    assert result.passed and result.candidate is None and result.reference is None
    assert result.reason == NO_REFERENCE and "absent" in gate.reference_note

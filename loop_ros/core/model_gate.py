"""The trainer's gate on the models it publishes (``trainer.gate_episodes``), without ROS.

``trainer.publish_after`` counts learning, not driving. Measured on this stack (bench/RESULTS.md,
"A gate on the trainer's models"): a trainer on a replay of the shipped model's own runs published
models that crashed the car in 2 or 3 of 3 evaluation episodes, where the shipped one crashed in none,
and the planner drove them. So, where the task has a simulator, a model is published only when it
drives there at least as well as the reference, the model the planner was started with
(``task.bundle``, the one the user deployed):

* both run as the planner node runs them (``episodes.bundle_planner``: its controller, arc and safety
  settings, on ONNX Runtime) for ``trainer.gate_episodes`` episodes from the same starts with the same
  planner noise (episode i from ``env.reset(seed + i)``, noise from ``default_rng(seed)``): the
  comparison is paired, and one model's evaluation is repeatable;
* the candidate is refused (``gate_verdict``) when it crashes (ends an episode early) in more episodes,
  spends more steps in violation, or its mean return is below the reference's by more than
  ``trainer.gate_return_tolerance`` of that return's magnitude;
* the reference stays the starting bundle: every model must drive as well as the one deployed, not
  only as well as the last one published. Without a starting bundle (learning from scratch, ``up
  --fresh``) there is nothing to keep, and every model passes unevaluated: measured, a gate against
  the last model published there kept a fresh run on its first model for 330 s (later models crashed
  more often in its 3 episodes while the car's own learning needed them deployed).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from loop_ros.core.bundle import BundleError
from loop_ros.core.episodes import bundle_planner, episode_statistics, run_episode
from loop_ros.core.params_file import section_configs

SUMMARY_KEYS = ("mean_return", "crashes", "mean_cost", "violations_per_episode", "episodes")
"""The evaluation figures a gate's record keeps, of the candidate and of the reference."""
NO_REFERENCE = "no starting bundle to compare with: published unevaluated"


class _Stopped(Exception):
    """Raised inside an evaluation episode when the gate is told to stop."""


class _StoppablePlanner:
    """A planner that checks ``should_stop`` before each plan, so a stop ends an evaluation within one
    plan (milliseconds), not one episode (5 s alone; about 10 s beside two planners on two cores, as long as
    `up`'s grace for a stop)."""

    def __init__(self, planner, should_stop: Callable[[], bool]):
        self._planner, self._should_stop = planner, should_stop

    def plan(self, state, rng, explore: bool = False):
        if self._should_stop():
            raise _Stopped
        return self._planner.plan(state, rng, explore=explore)

    def reset(self) -> None:
        self._planner.reset()


@dataclass(frozen=True)
class GateResult:
    """One candidate's verdict: ``passed``, why, and the figures behind it (None: not evaluated)."""

    passed: bool
    reason: str
    candidate: dict[str, Any] | None
    reference: dict[str, Any] | None
    seconds: float

    def record(self) -> dict[str, Any]:
        """The verdict for the trainer's summary (figures of both models, no per-episode lists)."""
        return {"passed": self.passed, "reason": self.reason, "seconds": round(self.seconds, 2),
                "candidate": _figures(self.candidate), "reference": _figures(self.reference)}


def _figures(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if stats is None else {key: stats[key] for key in SUMMARY_KEYS}


def gate_verdict(candidate: dict[str, Any], reference: dict[str, Any], return_tolerance: float) -> tuple[bool, str]:
    """(passed, reason) of a candidate's evaluation against the reference's (module docstring)."""
    episodes = candidate["episodes"]
    if candidate["crashes"] > reference["crashes"]:
        return False, (f"it crashed in {candidate['crashes']} of {episodes} episodes, the reference in "
                       f"{reference['crashes']}")
    if candidate["mean_cost"] > reference["mean_cost"]:
        return False, (f"it spent {candidate['mean_cost']:.1f} steps per episode in violation, the reference "
                       f"{reference['mean_cost']:.1f}")
    floor = reference["mean_return"] - return_tolerance * abs(reference["mean_return"])
    if candidate["mean_return"] < floor:
        return False, (f"its mean return {candidate['mean_return']:.1f} is below {floor:.1f} (the reference's "
                       f"{reference['mean_return']:.1f} less {return_tolerance:.0%})")
    return True, (f"mean return {candidate['mean_return']:.1f} (the reference: {reference['mean_return']:.1f}), "
                  f"{candidate['crashes']} crashes, {candidate['mean_cost']:.1f} violating steps per episode")


class ModelGate:
    """Judges candidate bundles against the reference (module docstring).

    ``params``: the planner's settings, flat (the arc, safety and runtime sections, as
    ``params_file.flatten`` makes them); ``reference_bundle``: the planner's starting bundle, or None.
    The simulator is built here (``NoSimulator`` for a task without one); after that, use the gate
    from one thread (the trainer's learning thread).
    """

    def __init__(self, task, controller: str, params: dict[str, Any], episodes: int, return_tolerance: float,
                 seed: int, reference_bundle: Path | None):
        self.task, self.controller, self.params = task, controller, params
        self.safety = section_configs(params, ("safety",))["safety"]
        self.episodes, self.return_tolerance, self.seed = episodes, return_tolerance, seed
        self._reference_bundle = reference_bundle
        self._reference: dict[str, Any] | None = None
        self._reference_evaluated = reference_bundle is None
        self.reference_note = "none (no starting bundle)" if reference_bundle is None else \
            f"{reference_bundle}, not evaluated yet"
        self._env = task.make_env(self.safety)

    def judge(self, candidate_dir: Path, should_stop: Callable[[], bool]) -> GateResult | None:
        """The verdict on the bundle in ``candidate_dir``; None when ``should_stop`` ended the evaluation."""
        started = time.perf_counter()
        if not self._reference_evaluated and not self._evaluate_reference(should_stop):
            return None
        if self._reference is None:
            return GateResult(True, NO_REFERENCE, None, None, time.perf_counter() - started)
        candidate = self.evaluate(candidate_dir, should_stop)
        if candidate is None:
            return None
        passed, reason = gate_verdict(candidate, self._reference, self.return_tolerance)
        return GateResult(passed, reason, candidate, self._reference, time.perf_counter() - started)

    def evaluate(self, bundle_dir: Path, should_stop: Callable[[], bool]) -> dict[str, Any] | None:
        """Evaluation statistics (``episodes.episode_statistics``) of ``bundle_dir``; None when stopped
        (checked before each plan). Raises BundleError for a bundle that does not fit the task."""
        planner, _ = bundle_planner(self.task, bundle_dir, self.params, self.controller)
        planner = _StoppablePlanner(planner, should_stop)
        rng = np.random.default_rng(self.seed)
        try:
            runs = [run_episode(self._env, planner, rng, self.seed + episode) for episode in range(self.episodes)]
        except _Stopped:
            return None
        return episode_statistics(self._env, runs)

    def _evaluate_reference(self, should_stop: Callable[[], bool]) -> bool:
        """Evaluate the starting bundle once; False when stopped. One that is missing, damaged or made for
        another task leaves no reference (noted in ``reference_note``); any other failure is raised,
        and the next candidate tries again (none is published meanwhile)."""
        try:
            stats = self.evaluate(self._reference_bundle, should_stop)
        except BundleError as error:
            self._reference_evaluated, self.reference_note = True, f"none ({self._reference_bundle} not usable: {error})"
            return True
        if stats is None:
            return False
        self._reference, self._reference_evaluated = stats, True
        self.reference_note = f"{self._reference_bundle} (the planner's starting bundle)"
        return True

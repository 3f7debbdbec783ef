"""The learning thread of the trainer node (``workers/training_worker.py``) without ROS: how it
keeps the model fresh when it falls behind (max_model_age_s, max_backlog, max_owed_updates)
and how fast it stops, mid-fit, mid-catch-up and mid-export. A fake learner with slow steps
stands in for ``LoopTrainer`` (the real one only for the interrupted fit)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from loop_ros.core.bundle import read_bundle, write_bundle
from loop_ros.core.config import ArcConfig, EnsembleConfig, SacConfig, SafetyConfig, TrainerConfig
from loop_ros.core.learner_state import save_learner_state
from loop_ros.core.model_gate import GateResult
from loop_ros.core.transitions import Transition
from loop_ros.workers.training_worker import TrainingWorker

PROVENANCE = {"command": "pytest", "seed": 0, "eval_return": None}


class SlowLearner:
    """``LoopTrainer``'s interface to the worker, with steps that take the given times."""

    learns_values = learns_model = True

    def __init__(self, template, update_s: float = 0.0, fit_s: float = 0.0, export_s: float = 0.0,
                 update_every: int = 10**9, batch: int = 2):
        self.template, self.update_s, self.fit_s, self.export_s = template, update_s, fit_s, export_s
        self.update_every, self.batch = update_every, batch
        self.steps = self.sac_updates = self.fits = 0
        self.fitted_at = None
        self.dynamics_module = None
        self.fit_started = threading.Event()
        self.export_started = threading.Event()
        self.interrupted_fits = 0

    def add_transition(self, s, a, r, s2, done) -> None:
        self.steps += 1

    def update(self) -> dict:
        if self.steps < self.batch:
            return {}
        time.sleep(self.update_s)
        self.sac_updates += 1
        return {"loss": 0.0}

    def refit_model_if_due(self, should_stop=None) -> dict | None:
        if self.fitted_at is not None and self.steps - self.fitted_at < self.update_every:
            return None
        self.fit_started.set()
        end = time.monotonic() + self.fit_s
        while time.monotonic() < end:  # minibatches of 10 ms
            if should_stop is not None and should_stop():
                self.interrupted_fits += 1
                return {"interrupted": True}
            time.sleep(0.01)
        self.fits, self.fitted_at, self.dynamics_module = self.fits + 1, self.steps, object()
        return {"interrupted": False, "epochs": 1, "elite_holdout_mse": 0.1, "seconds": self.fit_s, "n_train": 1}

    def export(self, out_dir, version, provenance):
        self.export_started.set()
        time.sleep(self.export_s)
        return write_bundle(read_bundle(self.template), out_dir)

    def status(self) -> dict:
        return {"steps": self.steps, "sac_updates": self.sac_updates, "fits": self.fits}


@pytest.fixture
def template(export_tiny_bundle):
    return export_tiny_bundle()


def transition(rng=np.random.default_rng(0)) -> Transition:
    s = rng.normal(size=6)
    return Transition(s, rng.uniform(-1.0, 1.0, 2), -1.0, s + 0.01, False)


def make_worker(tmp_path, learner, gate=None, **schedule):
    published: list[tuple[float, int]] = []  # (monotonic time, version)
    logged: list[tuple[str, str]] = []
    cfg = TrainerConfig(**{"seed_steps": 2, **schedule})
    worker = TrainingWorker(learner, cfg, tmp_path / "bundle",
                            lambda data, version: published.append((time.monotonic(), version)),
                            lambda level, text: logged.append((level, text)), PROVENANCE, gate=gate)
    return worker, published, logged


def offer_for(worker, seconds: float) -> None:
    """A new transition every 10 ms for ``seconds``, as a 100 Hz robot would send them."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        worker.offer(transition())
        time.sleep(0.01)


def wait_for(predicate, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_learner_that_owes_updates_still_publishes_once_the_model_is_max_model_age_s_old(tmp_path, template):
    """Updates of 30 ms against transitions every 10 ms, and a loaded replay owing 2000 of them:
    the owed updates never reach 0, so only the age forces publications, at most
    max_model_age_s + one step apart (here a step is one update, 30 ms)."""
    learner = SlowLearner(template, update_s=0.03)
    max_age = 0.5
    worker, published, _ = make_worker(tmp_path, learner, max_model_age_s=max_age, max_backlog=10**6,
                                       max_owed_updates=10**6)
    for _ in range(2000):
        worker.add_loaded(transition())
    assert worker.stats()["model_age_s"] is not None and worker.owed_updates() == 1999
    worker.start()
    started = time.monotonic()
    try:
        offer_for(worker, 2.8)
        stats = worker.stats()
    finally:
        assert worker.stop()
    assert worker.owed_updates() > 0 and stats["backlog"] > 50  # it fell behind and never caught up
    times = [started] + [t for t, _ in published]
    assert stats["forced_publications"] == len(published) >= 4
    assert max(np.diff(times)) <= max_age + 0.25  # + a step, an export and scheduling slack
    assert stats["model_age_s"] <= max_age + 0.25 and stats["models_published"] == len(published)


def test_without_new_learning_no_model_is_forced_out(tmp_path, template):
    learner = SlowLearner(template)
    worker, published, _ = make_worker(tmp_path, learner, max_model_age_s=0.2, publish_after=10**6)
    worker.add_loaded(transition())
    worker.start()
    try:
        time.sleep(0.6)
        assert published == []  # publish_after not reached: the age does not override it
    finally:
        worker.stop()
    learner = SlowLearner(template)
    worker, published, _ = make_worker(tmp_path / "idle", learner, max_model_age_s=0.2, max_owed_updates=0)
    for _ in range(5):
        worker.add_loaded(transition())
    worker.start()
    try:
        wait_for(lambda: published, 5.0, "the first model")
        time.sleep(0.8)
        assert len(published) == 1  # nothing learned since: the same networks are not sent again
    finally:
        worker.stop()


def test_a_backlog_beyond_max_backlog_is_stored_at_once_and_its_updates_made_as_time_allows(tmp_path, template):
    learner = SlowLearner(template, update_s=0.05)
    worker, _, logged = make_worker(tmp_path, learner, max_backlog=100, max_owed_updates=150, max_model_age_s=0.0)
    for _ in range(300):
        worker.offer(transition())
    assert worker.backlog() == 300
    worker.start()
    try:
        wait_for(lambda: learner.steps == 300, 1.0, "the backlog stored at once")  # 300 updates would take 15 s
        wait_for(lambda: learner.sac_updates >= 5, 5.0, "owed updates being made")
        stats = worker.stats()
    finally:
        worker.stop()
    # seed_steps 2: updates are due from the 2nd transition on, 299 in all; 150 owed at most, the rest skipped
    assert stats["sac_updates_skipped"] == 299 - 150 and stats["backlog"] == 0
    assert stats["owed_updates"] == 150 - stats["sac_updates"]
    assert ("warn", "300 transitions waited (trainer.max_backlog 100): stored at once; 150 SAC updates owed") in logged
    # below the bound each transition gets its update again
    worker, _, _ = make_worker(tmp_path / "small", SlowLearner(template, update_s=0.0), max_backlog=100)
    for _ in range(50):
        worker.offer(transition())
    worker.start()
    try:
        wait_for(lambda: worker.trainer.sac_updates == 49, 5.0, "49 updates")
    finally:
        worker.stop()
    assert worker.sac_updates_skipped == 0


def test_fits_take_at_most_max_fit_share_of_the_learners_time(tmp_path, template):
    """Fits of 0.3 s due after every transition (a host where a fit outlasts K_m transitions):
    with max_fit_share 0.5 the learner fits at most half the time and SAC gets the rest."""
    learner = SlowLearner(template, update_s=0.01, fit_s=0.3, update_every=1)
    worker, _, _ = make_worker(tmp_path, learner, max_fit_share=0.5, max_model_age_s=0.0)
    worker.start()
    started = time.monotonic()
    try:
        offer_for(worker, 3.0)
    finally:
        worker.stop()
    elapsed = time.monotonic() - started
    assert 2 <= learner.fits and learner.fits * 0.3 <= 0.5 * elapsed + 0.3
    assert learner.sac_updates >= 30  # at least ~a quarter of the time went to 10 ms updates


def test_owed_updates_are_capped_at_max_owed_updates(tmp_path, template):
    worker, _, _ = make_worker(tmp_path, SlowLearner(template), seed_steps=100, max_owed_updates=50)
    for _ in range(1000):
        worker.add_loaded(transition())
    assert worker.owed_updates() == 50 and worker.sac_updates_skipped == 901 - 50
    assert worker.stats()["sac_updates_skipped"] == 851


def test_no_model_is_published_before_sac_made_the_updates_of_publish_after_transitions(tmp_path, template):
    """A trainer started without its learner state on a large replay: 2000 transitions are in, but the
    owed updates were capped at 100, so SAC has made far fewer than those of publish_after (1000)."""
    learner = SlowLearner(template)
    worker, published, _ = make_worker(tmp_path, learner, publish_after=1000, max_owed_updates=100,
                                       max_model_age_s=0.2, max_backlog=10**6)
    for _ in range(2000):
        worker.add_loaded(transition())
    worker.start()
    try:
        wait_for(lambda: learner.fits == 1 and worker.owed_updates() == 0, 5.0, "the fit and the owed updates")
        for _ in range(5):
            worker.offer(transition())
        wait_for(lambda: learner.sac_updates == 105, 5.0, "the 5 new transitions' updates")
        time.sleep(0.6)
        assert published == []  # neither the refit nor the age publishes
        for _ in range(1000 - 2 + 1 - 105):  # the updates of publish_after transitions (seed_steps 2)
            worker.offer(transition())
        wait_for(lambda: published, 5.0, "the first model once SAC made its updates")
        assert learner.sac_updates >= 999
    finally:
        worker.stop()


def test_a_restarted_worker_resumes_the_learner_it_saved_and_owes_only_newer_transitions(tmp_path):
    """The real learner: the state is saved at each publication and at stop, restored by ``resume``."""
    from loop_ros.core.tasks import make_task
    from loop_ros.core.trainer import LoopTrainer

    def real_worker(name: str):
        ensemble = EnsembleConfig(hidden=(8,), ensemble_size=2, num_elites=1, max_epochs=1, batch_size=16,
                                  update_every=40)
        schedule = TrainerConfig(seed_steps=20)
        trainer = LoopTrainer(make_task("rc_car"), ArcConfig(horizon=2, population=8), SafetyConfig(), ensemble,
                              SacConfig(hidden=(8,), batch_size=16), "loop", 0, schedule)
        logged: list[tuple[str, str]] = []
        worker = TrainingWorker(trainer, schedule, tmp_path / name, lambda data, version: None,
                                lambda level, text: logged.append((level, text)), PROVENANCE,
                                state_path=tmp_path / "learner.pt")
        return worker, logged

    data = [transition() for _ in range(140)]
    first, logged = real_worker("first")
    first.resume()
    assert logged == [("info", f"no learner state in {tmp_path / 'learner.pt'}: learning from scratch")]
    first.start()
    try:
        for t in data[:110]:  # fits (and publications) at 20, 60 and 100 transitions; the last 10 only updates
            first.offer(t)
        wait_for(lambda: first.trainer.sac_updates == 91, 30.0, "all 110 transitions learned from")
    finally:
        assert first.stop()
    stats = first.stats()
    assert stats["learner_state_errors"] == 0 and stats["resumed_steps"] is None
    assert stats["models_published"] == 3 and stats["learner_state_saves"] == 3 + 1  # and one at the stop
    assert stats["learner_state_steps"] == 110
    saved = (first.trainer.fits, first.trainer.fitted_at, first.trainer.sac_updates)
    assert saved == (3, 100, 91)

    second, logged = real_worker("second")
    second.resume()
    for t in data:  # its replay: the 110 transitions learned from and 30 recorded after the stop
        second.add_loaded(t)
    assert (second.trainer.fits, second.trainer.fitted_at, second.trainer.sac_updates) == saved
    assert second.stats()["resumed_steps"] == 110 and second.owed_updates() == 30
    assert logged[0][0] == "info" and "learner state restored" in logged[0][1]
    for p, q in zip(second.trainer.sac.actor.parameters(), first.trainer.sac.actor.parameters()):
        assert torch.equal(p, q)
    # Updates a run skipped (a slow host) are not owed again after a restart.
    save_learner_state(first.trainer, tmp_path / "learner.pt", sac_updates_skipped=7)
    third, _ = real_worker("third")
    third.resume()
    for t in data:
        third.add_loaded(t)
    assert third.stats()["sac_updates_skipped"] == 7 and third.owed_updates() == 30 - 7


def test_a_refused_learner_state_is_set_aside_and_a_learner_that_never_learned_is_not_saved(tmp_path, template):
    state_path = tmp_path / "learner.pt"
    state_path.write_bytes(b"not a learner state")
    worker, _, logged = make_worker(tmp_path, SlowLearner(template))
    worker.state_path = state_path
    worker.resume()
    assert logged[0][0] == "warn" and "not used, learning from scratch" in logged[0][1]
    assert f"kept as {tmp_path / 'learner.pt.refused'}" in logged[0][1]
    worker.start()
    assert worker.stop()
    assert not state_path.exists() and (tmp_path / "learner.pt.refused").read_bytes() == b"not a learner state"
    assert worker.stats()["learner_state_saves"] == worker.stats()["learner_state_errors"] == 0


def test_a_learner_state_that_cannot_be_saved_is_counted_and_learning_goes_on(tmp_path, template, monkeypatch):
    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("loop_ros.workers.training_worker.save_learner_state", full_disk)
    learner = SlowLearner(template)
    worker, published, logged = make_worker(tmp_path, learner, max_owed_updates=0)
    worker.state_path = tmp_path / "learner.pt"
    for _ in range(5):
        worker.add_loaded(transition())
    worker.start()
    try:
        wait_for(lambda: published, 5.0, "the first model")
        worker.offer(transition())
        wait_for(lambda: learner.steps == 6, 5.0, "the next transition")
    finally:
        assert worker.stop()
    assert worker.stats()["learner_state_errors"] == 2  # at the publication and at the stop
    assert any(level == "error" and "No space left" in text for level, text in logged)


def test_stats_report_age_backlog_skipped_and_forced_publications(tmp_path, template):
    worker, _, _ = make_worker(tmp_path, SlowLearner(template))
    stats = worker.stats()
    assert stats["model_age_s"] is None and stats["backlog"] == 0
    assert stats["sac_updates_skipped"] == 0 and stats["forced_publications"] == 0
    worker.offer(transition())
    time.sleep(0.05)
    assert 0.04 <= worker.stats()["model_age_s"] < 1.0 and worker.stats()["backlog"] == 1


# ---------------------------------------------------------------- stopping


@pytest.mark.parametrize("phase", ["fit", "catch-up", "export"])
def test_stop_returns_promptly_in_every_phase(tmp_path, template, phase):
    """A fit of 30 s is interrupted at its next minibatch; owed updates of 0.1 s stop after the
    one in progress; an export (1 s) is finished first. The thread has ended when stop returns."""
    learner = SlowLearner(template, fit_s=30.0 if phase == "fit" else 0.0, update_s=0.1,
                          export_s=1.0 if phase == "export" else 0.0)
    worker, published, _ = make_worker(tmp_path, learner, max_owed_updates=10**6,
                                       max_model_age_s=0.01 if phase == "export" else 0.0)
    for _ in range(1000):
        worker.add_loaded(transition())
    worker.start()
    event = {"fit": learner.fit_started, "catch-up": learner.fit_started, "export": learner.export_started}[phase]
    assert event.wait(10.0)
    if phase == "catch-up":
        wait_for(lambda: learner.sac_updates >= 2, 5.0, "catching up")
    asked = time.monotonic()
    assert worker.stop()
    latency = time.monotonic() - asked
    assert not worker._thread.is_alive()
    assert latency <= {"fit": 0.5, "catch-up": 0.5, "export": 1.6}[phase]
    if phase == "fit":
        assert learner.interrupted_fits == 1 and learner.fits == 0 and published == []
    if phase == "export":
        assert len(published) == 1  # the export in progress was finished and published; no further one


def test_an_interrupted_ensemble_fit_keeps_the_previous_model():
    """The real learner: ``should_stop`` ends a fit at the next minibatch; the ensemble is as the
    previous fit left it (weights, normalisation, elites), and the trainer keeps planning with (and
    exporting) that fit."""
    from loop_ros.core.tasks import make_task
    from loop_ros.core.trainer import LoopTrainer

    ensemble = EnsembleConfig(hidden=(16,), ensemble_size=2, num_elites=1, max_epochs=3, patience=50, batch_size=8)
    trainer = LoopTrainer(make_task("rc_car"), ArcConfig(horizon=2, population=8), SafetyConfig(), ensemble,
                          SacConfig(hidden=(8,), batch_size=8), "loop", 0, TrainerConfig(seed_steps=10))
    for _ in range(200):
        t = transition()
        trainer.add_transition(t.s, t.a, t.r, t.s2, t.done)
    first = trainer.fit_model()
    assert not first["interrupted"] and trainer.fits == 1
    module = trainer.dynamics_module
    weights = [p.detach().clone() for p in trainer.ensemble.net.parameters()]
    stats, elites = dict(trainer.ensemble.stats), list(trainer.ensemble.elites)
    for _ in range(50):  # new data, so the interrupted fit's normalisation differs
        t = transition()
        trainer.add_transition(t.s + 3.0, t.a, t.r, t.s2 + 3.0, t.done)
    calls = []

    def stop_after_30_minibatches() -> bool:
        calls.append(None)
        return len(calls) > 30

    interrupted = trainer.fit_model(stop_after_30_minibatches)
    # 200 training transitions in batches of 8: 25 minibatches an epoch, so the second epoch was cut
    assert interrupted["interrupted"] and interrupted["epochs"] == 1 and len(calls) == 31
    assert trainer.fits == 1 and trainer.dynamics_module is module and trainer.model_fit_due() is False
    assert all(torch.equal(p, w) for p, w in zip(trainer.ensemble.net.parameters(), weights))
    assert all(trainer.ensemble.stats[key] is value for key, value in stats.items()) and trainer.ensemble.elites == elites


class ScriptedGate:
    """A ``ModelGate`` whose verdicts are given (True passes, False refuses; the last one repeats);
    ``block`` holds each evaluation until the worker stops, as a long gate episode would."""

    episodes, reference_note = 3, "the starting bundle"

    def __init__(self, verdicts, block: bool = False):
        self.verdicts, self.block, self.judged = list(verdicts), block, []
        self.evaluating = threading.Event()

    def judge(self, candidate_dir, should_stop):
        self.judged.append(read_bundle(candidate_dir))  # the candidate is whole when it is judged
        self.evaluating.set()
        while self.block:
            if should_stop():
                return None
            time.sleep(0.01)
        passed = self.verdicts.pop(0) if len(self.verdicts) > 1 else self.verdicts[0]
        figures = {"mean_return": 1.0, "crashes": 0, "mean_cost": 0.0, "violations_per_episode": 0.0, "episodes": 3}
        return GateResult(passed, "scripted", figures, figures, 0.0)


def test_a_model_the_gate_refuses_is_not_published_and_the_next_refit_brings_the_next_candidate(tmp_path, template):
    """(The template bundle is tmp_path/bundle: the worker's is tmp_path/trainer/bundle.)"""
    learner = SlowLearner(template, update_every=5)
    gate = ScriptedGate([False, True])
    worker, published, logged = make_worker(tmp_path / "trainer", learner, gate=gate, max_model_age_s=0.0)
    worker.start()
    try:
        for _ in range(3):  # the first fit (at the first transition) and its candidate, refused
            worker.offer(transition())
        wait_for(lambda: gate.judged, 5.0, "the first candidate's verdict")
        time.sleep(0.2)
        assert len(gate.judged) == 1  # no new fit: no new candidate
        assert published == [] and not (tmp_path / "trainer" / "bundle").exists()  # the last model published stays as it was
        offer_for(worker, 0.3)  # the next fit, 5 transitions later: its candidate passes
        wait_for(lambda: published, 5.0, "the second candidate")
    finally:
        assert worker.stop()
    stats = worker.stats()
    assert stats["gate_refusals"] == 1 and stats["gate_passes"] == len(published) == len(gate.judged) - 1
    read_bundle(tmp_path / "trainer" / "bundle")  # a candidate that passed, written there whole
    assert [v["passed"] for v in worker.gate_verdicts][:2] == [False, True]
    assert any(level == "warn" and "not published" in text and "scripted" in text for level, text in logged)


def test_a_refused_model_is_not_retried_before_max_model_age_s(tmp_path, template):
    """A gate that refuses everything: the age rule tries again once per max_model_age_s, not every turn."""
    learner = SlowLearner(template, update_s=0.005)
    gate = ScriptedGate([False])
    worker, published, _ = make_worker(tmp_path / "trainer", learner, gate=gate, max_model_age_s=0.4)
    worker.start()
    try:
        offer_for(worker, 1.5)
    finally:
        assert worker.stop()
    assert published == [] and 2 <= len(gate.judged) <= 5  # the first fit's, then one per 0.4 s at most


def test_a_worker_stopped_while_its_gate_evaluates_publishes_nothing_and_stops_promptly(tmp_path, template):
    learner = SlowLearner(template)
    gate = ScriptedGate([True], block=True)
    worker, published, _ = make_worker(tmp_path / "trainer", learner, gate=gate)
    worker.start()
    for _ in range(3):
        worker.offer(transition())
    assert gate.evaluating.wait(5.0)
    started = time.monotonic()
    assert worker.stop()
    assert time.monotonic() - started < 1.0 and published == []
    assert worker.stats()["gate_refusals"] == 0 and not (tmp_path / "trainer" / "bundle").exists()

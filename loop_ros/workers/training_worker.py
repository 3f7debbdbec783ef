"""The trainer node's learning thread, without ROS: Alg. 1 l.5-7 on transitions as they arrive.

``TrainingWorker`` drives the one learner, ``core.trainer.LoopTrainer`` (the class behind
``loop-ros train``): each new transition is stored and followed by ``update()`` (SAC),
the ensemble is refit when due (every K_m transitions after the seeding phase), and after
each refit, and every ``trainer.publish_every`` transitions, a bundle is exported and
handed to ``publish(bytes, version)``. Acting is the planner node's job; this thread only
learns.

Restarts. With a ``state_path``, the learner goes on where the last run stopped: ``resume()``
(before the replay is loaded) restores the state saved there (``core.learner_state``), and
the state is saved again after every publication and when the worker stops. A replay loaded
at start counts as transitions Alg. 1 has seen, so the SAC updates they are owed
(``updates_per_step`` per transition since the seeding phase, less those the restored state
made or skipped) are made up while no new transition waits, and models are published only
once that is done: a restarted trainer does not publish networks trained on a fraction of its
data (unless the model grows too old, below).

``trainer.publish_after`` counts the learning, not only the data: no model is published before
the replay holds that many transitions and, for an algo that learns values, SAC has made the
updates Alg. 1 makes over that many. So a trainer started without its state on a large replay
(whose owed updates were capped, below) does not hand the planner a value function far behind
its dynamics model.

Falling behind. A host too slow for ``updates_per_step`` SAC updates per transition plus
the refits still publishes, and does not owe updates forever:

* ``trainer.max_model_age_s``: once a model may be published (the ensemble is fitted and
  ``publish_after`` transitions are in), a new one is published when the last one is this
  old (before the first: since the first transition) and the networks changed since, even
  with SAC updates still owed (``forced_publications``). The age is checked after every
  transition, SAC update and fit, and at least once a second while idle, so it stays below
  max_model_age_s + the longest of (1 s, one ensemble fit: ``fit_max_seconds`` + one epoch)
  + one export.
* ``trainer.max_backlog``: a turn of the learning thread that finds more transitions
  waiting stores them all at once and owes their SAC updates, so the replay holds the
  newest data at once. Every turn then makes up to ``CATCH_UP_UPDATES`` owed updates, so
  SAC uses all the time that storing and fitting leave.
* ``trainer.max_owed_updates``: owed updates beyond this many are dropped (counted in
  ``sac_updates_skipped``), so catching up ends.
* ``trainer.max_fit_share``: a due ensemble fit waits until (1/share - 1) x the last fit's
  duration has passed since it ended. On a host where a
  fit takes longer than K_m transitions take to arrive, fits would otherwise take all the
  learner's time and SAC none (measured: 948 SAC updates in a 600 s run at 30 s per fit).

A gate (``trainer.gate_episodes``, ``core.model_gate``). With a ``gate``, each exported model
first drives the task's simulator, as the planner would, and is published only if it drives at
least as well as the planner's starting bundle; it is exported to ``candidate`` beside ``bundle_dir``, which
keeps the last model published. A refused model counts as a publication for the schedule (the next
attempt comes after the next refits, or max_model_age_s later), never reaches the planner, and is
counted (``gate_refusals``) and logged with its figures.

Stopping. ``stop()`` sets a flag, which the thread checks between transitions, between SAC
updates, before every minibatch of an ensemble fit (an interrupted fit is dropped: the
previous model stays) and before an export, and joins the thread. So it returns after at
most one SAC update, one ensemble minibatch with its epoch's holdout evaluation, one
export with its publication, or one plan of the gate's evaluation (the candidate is then not
published), whichever is in progress (an export took 0.6 s for the RC car's networks; the others
are milliseconds), and never later than ``STOP_JOIN_S``.
"""
from __future__ import annotations

import math
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from loop_ros.core.bundle import Bundle, bundle_to_bytes, read_bundle, write_bundle
from loop_ros.core.config import TrainerConfig
from loop_ros.core.learner_state import (LearnerStateError, read_learner_state, restore_learner, save_learner_state,
                                         set_aside)
from loop_ros.core.transitions import Transition
from loop_ros.workers.thread_loop import ThreadLoop

CATCH_UP_UPDATES = 20  # owed SAC updates per turn, so a new transition never waits for long
STOP_JOIN_S = 60.0
"""Longest wait of ``stop()`` for the learning thread (its longest step, an export, takes about 1 s)."""
EXPORT_RETRY_S = 10.0
"""After a failed export (or publication) the next attempt waits this long."""
GATE_VERDICTS_KEPT = 100
"""The newest gate verdicts the summary lists."""


class TrainingWorker(ThreadLoop):
    """Learns in a thread from ``offer``-ed transitions; exports and publishes bundles.

    ``trainer`` is a ``LoopTrainer``; ``bundle_dir`` receives each exported bundle (the last
    one stays); ``first_version`` is the lowest version to publish (versions also never
    fall below the transition count, so they grow across restarts); ``gate``, a
    ``core.model_gate.ModelGate`` or None, judges each model before it is published.
    """

    def __init__(self, trainer, schedule: TrainerConfig, bundle_dir: Path, publish: Callable[[bytes, int], None],
                 log: Callable[[str, str], None], provenance: dict[str, Any], first_version: int = 1,
                 state_path: Path | None = None, gate=None):
        super().__init__("training", poll_s=1.0)  # a turn a second at least: the model's age
        self.trainer, self.schedule, self.bundle_dir, self.state_path = trainer, schedule, bundle_dir, state_path
        self._publish, self._log, self._provenance = publish, log, provenance
        self._inbox: list[Transition] = []
        self._in_turn = 0  # transitions the current turn took from the inbox and has not stored yet
        self._stalled = False  # the owed updates cannot be made (replay smaller than a batch)
        self._publish_due = False
        self._since_publish = 0
        self._next_version = first_version
        self.versions_published: list[int] = []
        self.last_fit: dict[str, Any] = {}
        self.last_export_s: float | None = None
        self.errors = 0
        self.sac_updates_skipped = self.forced_publications = 0
        self.resumed_steps: int | None = None  # transitions behind the learner state restored at start
        self.state_saves = self.state_errors = 0  # saves of the learner state made and failed
        self._saved_nets: tuple[int, int] | None = None  # (fits, sac_updates) of the learner state on disk
        self.saved_steps: int | None = None  # transitions the learner state on disk had learned from
        self._age_origin: float | None = None  # monotonic time of the last publication, else of the first transition
        self._published_nets: tuple[int, int] | None = None  # (fits, sac_updates) of the last model published
        self._failed_export_at = -math.inf
        self._last_fit_end: float | None = None  # monotonic time when the last completed fit ended
        self._started = time.monotonic()
        self.gate = gate
        self.gate_verdicts: deque[dict[str, Any]] = deque(maxlen=GATE_VERDICTS_KEPT)
        self.gate_passes = self.gate_refusals = 0
        self._refused_at = -math.inf  # monotonic time of the last model the gate refused

    # ------------------------------------------------------------ called from other threads
    def resume(self) -> None:
        """Before ``add_loaded`` and ``start``: restore the learner state in ``state_path``, if there is
        one that fits (else log why and learn from scratch)."""
        if self.state_path is None:
            return
        try:
            state = read_learner_state(self.state_path)
            if state is None:
                self._log("info", f"no learner state in {self.state_path}: learning from scratch")
                return
            restored = restore_learner(self.trainer, state)
        except LearnerStateError as error:
            self._refused_state(error)
            return
        self.resumed_steps = self.saved_steps = restored["steps"]
        self.sac_updates_skipped = restored["sac_updates_skipped"]
        self._saved_nets = self._published_nets = (self.trainer.fits, self.trainer.sac_updates)
        self._log("info", f"learner state restored from {self.state_path}: {self.resumed_steps} transitions, "
                          f"{self.trainer.fits} fits, {self.trainer.sac_updates} SAC updates")

    def _refused_state(self, error: LearnerStateError) -> None:
        try:
            kept = f"; kept as {set_aside(self.state_path)}"
        except OSError as rename_error:
            kept = f"; it could not be set aside: {rename_error!r}"
        self._log("warn", f"learner state {self.state_path} not used, learning from scratch: {error}{kept}")

    def add_loaded(self, transition: Transition) -> None:
        """A transition of the replay loaded at start (before ``start``): stored, no update."""
        self.trainer.add_transition(transition.s, transition.a, transition.r, transition.s2, transition.done)
        self._note_transition()
        self._cap_owed_updates()

    def offer(self, transition: Transition) -> None:
        with self._cond:
            self._inbox.append(transition)
            self._note_transition()
            self._cond.notify()

    def stop(self, timeout_s: float = STOP_JOIN_S) -> bool:
        """Stop the thread and wait for it (module docstring: how long); False (logged) when it
        is still running after ``timeout_s``."""
        if super().stop(timeout_s):
            self._save_state()
            return True
        self._log("error", f"the training thread did not stop within {timeout_s:.0f} s")
        return False

    def stats(self) -> dict[str, Any]:
        """Counters for the diagnostics and the summary."""
        status = self.trainer.status()
        return {"transitions": status["steps"], "sac_updates": status["sac_updates"], "fits": status["fits"],
                "backlog": self.backlog(), "owed_updates": self.owed_updates(),
                "sac_updates_skipped": self.sac_updates_skipped, "resumed_steps": self.resumed_steps,
                "learner_state_saves": self.state_saves, "learner_state_errors": self.state_errors,
                "learner_state_steps": self.saved_steps,
                "model_version": self.versions_published[-1] if self.versions_published else None,
                "models_published": len(self.versions_published), "forced_publications": self.forced_publications,
                "gate_passes": self.gate_passes, "gate_refusals": self.gate_refusals,
                "model_age_s": self.model_age_s(), "last_export_s": self.last_export_s,
                "training_errors": self.errors, **{f"fit_{k}": v for k, v in self.last_fit.items()
                                                   if k in ("epochs", "elite_holdout_mse", "seconds", "n_train")}}

    def backlog(self) -> int:
        """Transitions received and not yet stored in the learner."""
        return len(self._inbox) + self._in_turn

    def model_age_s(self) -> float | None:
        """Seconds since the last publication (before the first: since the first transition);
        None before any transition."""
        origin = self._age_origin
        return None if origin is None else round(time.monotonic() - origin, 3)

    def owed_updates(self) -> int:
        """SAC updates Alg. 1 would have made by now minus those made or skipped (> 0 after
        loading a replay; at most ``max_owed_updates``)."""
        trainer = self.trainer
        if not trainer.learns_values:
            return 0
        return self._updates_due(trainer.steps) - trainer.sac_updates - self.sac_updates_skipped

    def _updates_due(self, transitions: int) -> int:
        """SAC updates Alg. 1 makes over this many transitions (``updates_per_step`` each after the seeding phase)."""
        return self.schedule.updates_per_step * max(0, transitions - self.schedule.seed_steps + 1)

    def _note_transition(self) -> None:
        if self._age_origin is None:
            self._age_origin = time.monotonic()

    def _cap_owed_updates(self) -> None:
        excess = self.owed_updates() - self.schedule.max_owed_updates
        if excess > 0:
            self.sac_updates_skipped += excess

    # ------------------------------------------------------------ the training thread
    def _has_work(self) -> bool:
        return bool(self._inbox) or (self.owed_updates() > 0 and not self._stalled)

    def _take(self) -> list[Transition]:
        batch, self._inbox = self._inbox, []
        self._in_turn = len(batch)
        return batch

    def _failed(self, error: Exception) -> None:
        """Keep learning from the next transitions; the planner keeps its model."""
        self.errors += 1
        self._stalled = True  # owed updates wait for the next transition: a lasting error must not spin
        self._log("error", f"training step failed ({self.errors} so far): {error!r}")

    def _turn_done(self) -> None:
        self._in_turn = 0

    def _work(self, batch: list[Transition]) -> None:
        if len(batch) > self.schedule.max_backlog:
            self._store_owing_updates(batch)
        else:
            self._store_with_updates(batch)
        self._cap_owed_updates()
        self._catch_up()
        self._publish_if_due()

    def _store(self, t: Transition) -> None:
        self.trainer.add_transition(t.s, t.a, t.r, t.s2, t.done)
        self._in_turn -= 1
        self._since_publish += 1
        self._stalled = False

    def _store_with_updates(self, batch: list[Transition]) -> None:
        """Alg. 1 l.5-7 for each transition."""
        for t in batch:
            if self._stopping:
                return
            self._store(t)
            self.trainer.update()
            self._refit_if_due()
            self._publish_if_due()

    def _store_owing_updates(self, batch: list[Transition]) -> None:
        """The catch-up policy (module docstring): the whole backlog at once, its SAC updates owed."""
        for t in batch:
            self._store(t)
        self._cap_owed_updates()
        self._log("warn", f"{len(batch)} transitions waited (trainer.max_backlog {self.schedule.max_backlog}): "
                          f"stored at once; {self.owed_updates()} SAC updates owed")

    def _fit_share_allows(self) -> bool:
        """``trainer.max_fit_share``: enough other work since the last fit ended."""
        if self._last_fit_end is None:
            return True
        rest_s = self.last_fit.get("seconds", 0.0) * (1.0 / self.schedule.max_fit_share - 1.0)
        return time.monotonic() - self._last_fit_end >= rest_s

    def _refit_if_due(self) -> None:
        fit = self.trainer.refit_model_if_due(lambda: self._stopping) if self._fit_share_allows() else None
        if fit is not None and not fit["interrupted"]:
            self.last_fit, self._last_fit_end = fit, time.monotonic()
            self._publish_due = self._publish_due or self.trainer.fits % self.schedule.refits_per_publish == 0
            self._log("info", f"ensemble refit on {self.trainer.steps} transitions: {fit['epochs']} epochs, "
                              f"elite holdout MSE {fit['elite_holdout_mse']:.4g}, {fit['seconds']:.1f} s")
        every = self.schedule.publish_every
        if every and self._since_publish >= every and self.trainer.fits:
            self._publish_due = True

    def _catch_up(self) -> None:
        self._refit_if_due()  # a loaded replay may make the first fit due at once
        for _ in range(CATCH_UP_UPDATES):
            if self._stopping or self.owed_updates() <= 0:
                return
            if not self.trainer.update():
                self._stalled = True
                return
            self._publish_if_due()

    def _trained_enough(self) -> bool:
        """``trainer.publish_after`` (module docstring): that many transitions in, and their SAC updates made."""
        trainer, after = self.trainer, self.schedule.publish_after
        if trainer.steps < after:
            return False
        return not trainer.learns_values or trainer.sac_updates >= self._updates_due(after)

    def _publish_if_due(self) -> None:
        """Publish after a refit once no SAC update is owed, or when the model is too old."""
        trainer = self.trainer
        if (self._stopping or not self._trained_enough()
                or (trainer.learns_model and trainer.dynamics_module is None)):
            return
        if time.monotonic() - self._failed_export_at < EXPORT_RETRY_S:
            return
        if self._publish_due and self.owed_updates() <= 0:
            self._export_and_publish()
        elif self._model_too_old():
            self._export_and_publish()
            self.forced_publications += 1

    def _model_too_old(self) -> bool:
        max_age = self.schedule.max_model_age_s
        if not max_age or self._age_origin is None:
            return False
        changed = self._published_nets != (self.trainer.fits, self.trainer.sac_updates)
        return changed and time.monotonic() - max(self._age_origin, self._refused_at) >= max_age

    def _keep_copy(self, bundle: Bundle, version: int) -> None:
        """Write the bundle to models/v<version> beside bundle_dir (whole or not at all:
        ``write_bundle``); drop the oldest beyond ``keep_models``."""
        keep = self.schedule.keep_models
        if keep == 0:
            return
        archive = self.bundle_dir.parent / "models"
        write_bundle(bundle, archive / f"v{version:09d}")
        if keep > 0:
            for old in sorted(archive.glob("v*"))[:-keep]:
                shutil.rmtree(old)

    def _export_and_publish(self) -> None:
        started = time.perf_counter()
        version = max(self._next_version, self.trainer.steps)
        provenance = {**self._provenance, "steps": self.trainer.steps, "wall_time_s": time.monotonic() - self._started}
        try:
            export_dir = self.bundle_dir if self.gate is None else self.bundle_dir.parent / "candidate"
            bundle = read_bundle(self.trainer.export(export_dir, version, provenance))
            if not self._passes_gate(export_dir, version):
                return
            if export_dir != self.bundle_dir:
                write_bundle(bundle, self.bundle_dir)
            self._keep_copy(bundle, version)
            data = bundle_to_bytes(bundle)
            self.last_export_s = time.perf_counter() - started
            self._publish(data, version)
        except Exception:
            self._failed_export_at = time.monotonic()
            raise
        self.versions_published.append(version)
        self._next_version = version + 1
        self._publish_due, self._since_publish = False, 0
        self._age_origin = time.monotonic()
        self._published_nets = (self.trainer.fits, self.trainer.sac_updates)
        self._save_state()

    def _passes_gate(self, candidate_dir: Path, version: int) -> bool:
        """Whether the model exported to ``candidate_dir`` may be published (module docstring): always
        without a gate; never when the worker stops during its evaluation."""
        if self.gate is None:
            return True
        result = self.gate.judge(candidate_dir, lambda: self._stopping)
        if result is None:
            return False
        self.gate_verdicts.append({"version": version, "wall_time": time.time(), "transitions": self.trainer.steps,
                                   **result.record()})
        if result.passed:
            self.gate_passes += 1
            self._log("info", f"model version {version} passed the gate in {result.seconds:.1f} s: {result.reason}")
            return True
        self.gate_refusals += 1
        self._log("warn", f"model version {version} not published ({self.gate_refusals} refused so far): "
                          f"{result.reason} ({self.gate.episodes} simulator episodes; reference: "
                          f"{self.gate.reference_note})")
        self._next_version = version + 1
        self._publish_due, self._since_publish = False, 0
        self._refused_at = time.monotonic()
        self._save_state()
        return False

    def _save_state(self) -> None:
        """Save the learner to ``state_path`` when it learned since the last save (a learner that never
        learned is not saved); a failure is logged and counted, never raised (the published model
        and the replay are unaffected)."""
        nets = (self.trainer.fits, self.trainer.sac_updates)
        if self.state_path is None or nets in (self._saved_nets, (0, 0)):
            return
        try:
            save_learner_state(self.trainer, self.state_path, self.sac_updates_skipped)
        except Exception as error:  # noqa: BLE001 - e.g. a full disk: learning goes on
            self.state_errors += 1
            self._log("error", f"saving the learner state to {self.state_path} failed ({self.state_errors} "
                               f"so far): {error!r}")
            return
        self.state_saves += 1
        self._saved_nets, self.saved_steps = nets, self.trainer.steps

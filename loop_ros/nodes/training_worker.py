"""The trainer node's learning thread, without ROS: Alg. 1 l.5-7 on transitions as they arrive.

``TrainingWorker`` drives the one learner, ``core.trainer.LoopTrainer`` (the class behind
``loop-ros train``): each new transition is stored and followed by ``update()`` (SAC),
the ensemble is refit when due (every K_m transitions after the seeding phase), and after
each refit, and every ``trainer.publish_every`` transitions, a bundle is exported and
handed to ``publish(bytes, version)``. Acting is the planner node's job; this thread only
learns.

A replay loaded at start counts as transitions Alg. 1 has seen, so the SAC updates they
are owed (``updates_per_step`` per transition since the seeding phase) are made up while
no new transition waits, and models are published only once that is done: a restarted
trainer does not publish networks trained on a fraction of its data.
"""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

from loop_ros.core.bundle import bundle_to_bytes
from loop_ros.core.config import TrainerConfig
from loop_ros.core.replay import Transition

CATCH_UP_UPDATES = 20  # owed SAC updates per turn, so a new transition never waits for long


class TrainingWorker:
    """Learns in a thread from ``offer``-ed transitions; exports and publishes bundles.

    ``trainer`` is a ``LoopTrainer``; ``bundle_dir`` receives each exported bundle (the last
    one stays); ``first_version`` is the lowest version to publish (versions also never
    fall below the transition count, so they grow across restarts).
    """

    def __init__(self, trainer, schedule: TrainerConfig, bundle_dir: Path, publish: Callable[[bytes, int], None],
                 log: Callable[[str, str], None], provenance: dict[str, Any], first_version: int = 1):
        self.trainer, self.schedule, self.bundle_dir = trainer, schedule, bundle_dir
        self._publish, self._log, self._provenance = publish, log, provenance
        self._cond = threading.Condition()
        self._inbox: list[Transition] = []
        self._stopping = False
        self._stalled = False  # the owed updates cannot be made (replay smaller than a batch)
        self._publish_due = False
        self._since_publish = 0
        self._next_version = first_version
        self.versions_published: list[int] = []
        self.last_fit: dict[str, Any] = {}
        self.last_export_s: float | None = None
        self.errors = 0
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="training", daemon=True)

    # ------------------------------------------------------------ called from other threads
    def add_loaded(self, transition: Transition) -> None:
        """A transition of the replay loaded at start (before ``start``): stored, no update."""
        self.trainer.add_transition(transition.s, transition.a, transition.r, transition.s2, transition.done)

    def offer(self, transition: Transition) -> None:
        with self._cond:
            self._inbox.append(transition)
            self._cond.notify()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop after the current step (an ensemble fit in progress is not interrupted)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout_s)

    def stats(self) -> dict[str, Any]:
        """Counters for the diagnostics and the summary."""
        status = self.trainer.status()
        return {"transitions": status["steps"], "sac_updates": status["sac_updates"], "fits": status["fits"],
                "backlog": len(self._inbox), "owed_updates": self.owed_updates(),
                "model_version": self.versions_published[-1] if self.versions_published else None,
                "models_published": len(self.versions_published), "last_export_s": self.last_export_s,
                "training_errors": self.errors, **{f"fit_{k}": v for k, v in self.last_fit.items()
                                                   if k in ("epochs", "elite_holdout_mse", "seconds", "n_train")}}

    def owed_updates(self) -> int:
        """SAC updates Alg. 1 would have made by now minus those made (> 0 after loading a replay)."""
        trainer = self.trainer
        if not trainer.learns_values:
            return 0
        due = self.schedule.updates_per_step * max(0, trainer.steps - self.schedule.seed_steps + 1)
        return due - trainer.sac_updates

    # ------------------------------------------------------------ the training thread
    def _has_work(self) -> bool:
        return self._stopping or bool(self._inbox) or (self.owed_updates() > 0 and not self._stalled)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._has_work, timeout=1.0)
                if self._stopping:
                    return
                batch, self._inbox = self._inbox, []
            try:
                self._learn(batch)
            except Exception as error:  # keep learning from the next transitions; the planner keeps its model
                self.errors += 1
                self._log("error", f"training step failed: {error!r}")

    def _learn(self, batch: list[Transition]) -> None:
        trainer = self.trainer
        for t in batch:
            trainer.add_transition(t.s, t.a, t.r, t.s2, t.done)
            self._since_publish += 1
            self._stalled = False
            trainer.update()
            self._refit_if_due()
        if not batch:
            self._catch_up()
        if self._publish_due and self.owed_updates() <= 0 and trainer.steps >= self.schedule.publish_after:
            self._export_and_publish()

    def _refit_if_due(self) -> None:
        fit = self.trainer.refit_model_if_due()
        if fit is not None:
            self.last_fit = fit
            self._publish_due = self._publish_due or self.trainer.fits % self.schedule.refits_per_publish == 0
            self._log("info", f"ensemble refit on {self.trainer.steps} transitions: {fit['epochs']} epochs, "
                              f"elite holdout MSE {fit['elite_holdout_mse']:.4g}, {fit['seconds']:.1f} s")
        every = self.schedule.publish_every
        if every and self._since_publish >= every and self.trainer.fits:
            self._publish_due = True

    def _catch_up(self) -> None:
        self._refit_if_due()  # a loaded replay may make the first fit due at once
        for _ in range(CATCH_UP_UPDATES):
            if self.owed_updates() <= 0:
                return
            if not self.trainer.update():
                self._stalled = True
                return

    def _keep_copy(self, bundle: Path, version: int) -> None:
        """Copy the bundle to models/v<version> beside it; drop the oldest beyond ``keep_models``."""
        keep = self.schedule.keep_models
        if keep == 0:
            return
        archive = bundle.parent / "models"
        shutil.copytree(bundle, archive / f"v{version:09d}", dirs_exist_ok=True)
        if keep > 0:
            for old in sorted(archive.glob("v*"))[:-keep]:
                shutil.rmtree(old)

    def _export_and_publish(self) -> None:
        started = time.perf_counter()
        version = max(self._next_version, self.trainer.steps)
        provenance = {**self._provenance, "steps": self.trainer.steps, "wall_time_s": time.monotonic() - self._started}
        path = self.trainer.export(self.bundle_dir, version, provenance)
        self._keep_copy(path, version)
        data = bundle_to_bytes(path)
        self.last_export_s = time.perf_counter() - started
        self._publish(data, version)
        self.versions_published.append(version)
        self._next_version = version + 1
        self._publish_due, self._since_publish = False, 0

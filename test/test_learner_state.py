"""The learner state a trainer saves and restores (``core/learner_state.py``): a restored learner that is
given its replay again learns on exactly as the one that was never stopped; a state that does not fit
is refused with its reason and changes nothing."""
from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from loop_ros.core.config import ArcConfig, EnsembleConfig, SacConfig, SafetyConfig, TrainerConfig
from loop_ros.core.learner_state import LearnerStateError, read_learner_state, restore_learner, save_learner_state
from loop_ros.core.tasks import make_task
from loop_ros.core.trainer import LoopTrainer

ENSEMBLE = EnsembleConfig(hidden=(16,), ensemble_size=2, num_elites=1, max_epochs=2, batch_size=16, update_every=40)
SAC = SacConfig(hidden=(8,), batch_size=16)


def make_trainer(task: str = "rc_car", algo: str = "loop", sac: SacConfig = SAC,
                 ensemble: EnsembleConfig = ENSEMBLE) -> LoopTrainer:
    return LoopTrainer(make_task(task), ArcConfig(horizon=2, population=8), SafetyConfig(), ensemble, sac, algo, 0,
                       TrainerConfig(seed_steps=20))


def transitions(n: int, seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = rng.normal(size=6)
        out.append((s, rng.uniform(-1.0, 1.0, 2), float(rng.normal()), s + 0.05 * rng.normal(size=6), False))
    return out


def learn(trainer: LoopTrainer, data: list[tuple]) -> None:
    """Alg. 1 l.5-7 on each transition, as the training worker does."""
    for t in data:
        trainer.add_transition(*t)
        trainer.update()
        trainer.refit_model_if_due()


def parameters(trainer: LoopTrainer) -> list[torch.Tensor]:
    sac = trainer.sac
    return [p.detach().clone() for module in (sac.actor, sac.critic, sac.critic_target, trainer.ensemble.net)
            for p in module.parameters()] + [sac.log_alpha.detach().clone()]


def test_a_restored_learner_given_its_replay_learns_on_exactly_as_one_never_stopped(tmp_path):
    before, after = transitions(130, 1), transitions(60, 2)
    path = tmp_path / "learner.pt"
    going_on = make_trainer()
    learn(going_on, before)
    save_learner_state(going_on, path)

    restarted = make_trainer()
    restore_learner(restarted, read_learner_state(path))
    for t in before:  # the replay, loaded at start: stored, no updates
        restarted.add_transition(*t)
    assert (restarted.fits, restarted.fitted_at, restarted.sac_updates) == (going_on.fits, 100, going_on.sac_updates)
    assert restarted.dynamics_module is not None  # it plans with the restored elites before its next fit

    learn(going_on, after)
    learn(restarted, after)
    assert (restarted.fits, restarted.sac_updates) == (going_on.fits, going_on.sac_updates) == (5, 171)
    for mine, theirs in zip(parameters(restarted), parameters(going_on)):
        assert torch.equal(mine, theirs)
    assert restarted.ensemble.elites == going_on.ensemble.elites
    state = before[0][0]
    np.testing.assert_array_equal(restarted.act(state, np.random.default_rng(5)),
                                  going_on.act(state, np.random.default_rng(5)))


def test_the_learning_rates_come_from_the_configuration_not_the_file(tmp_path):
    path = tmp_path / "learner.pt"
    saved = make_trainer()
    learn(saved, transitions(60, 1))
    save_learner_state(saved, path)
    restored = make_trainer(sac=dataclasses.replace(SAC, lr=5e-5), ensemble=dataclasses.replace(ENSEMBLE, lr=2e-4))
    restore_learner(restored, read_learner_state(path))
    assert [g["lr"] for g in restored.sac.actor_optimizer.param_groups] == [5e-5]
    assert [g["lr"] for g in restored.ensemble.optimizer.param_groups] == [2e-4, 2e-4]
    moment = saved.sac.critic_optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(restored.sac.critic_optimizer.state_dict()["state"][0]["exp_avg"], moment)


@pytest.mark.parametrize("other", [
    {"task": "rc_car_fast"},  # same sizes, another task
    {"algo": "pets"},
    {"sac": dataclasses.replace(SAC, hidden=(12,))},
    {"ensemble": dataclasses.replace(ENSEMBLE, hidden=(16, 16))},
    {"ensemble": dataclasses.replace(ENSEMBLE, ensemble_size=3)},
])
def test_a_state_of_another_task_algo_or_network_is_refused_and_changes_nothing(tmp_path, other):
    path = tmp_path / "learner.pt"
    saved = make_trainer()
    learn(saved, transitions(60, 1))
    save_learner_state(saved, path)
    trainer = make_trainer(**other)
    untouched = parameters(trainer)
    with pytest.raises(LearnerStateError):
        restore_learner(trainer, read_learner_state(path))
    assert (trainer.fits, trainer.sac_updates, trainer.dynamics_module) == (0, 0, None)
    for mine, before in zip(parameters(trainer), untouched):
        assert torch.equal(mine, before)


def test_loop_and_safe_loop_share_a_state(tmp_path):
    path = tmp_path / "learner.pt"
    saved = make_trainer(algo="loop")
    learn(saved, transitions(60, 1))
    save_learner_state(saved, path)
    restored = make_trainer(algo="safe-loop")
    restore_learner(restored, read_learner_state(path))
    assert restored.sac_updates == saved.sac_updates and restored.dynamics_module is not None


@pytest.mark.parametrize("corrupt", [
    lambda state: state.update(steps=float("inf")),
    lambda state: state.update(fitted_at=-3),
    lambda state: state.update(sac_updates=2.5),
    lambda state: state["rng"]["state"].update(state=2**200),
    lambda state: state.update(obs_dim=torch.tensor([6, 6])),
    lambda state: state.update(task=torch.tensor([1.0])),
    lambda state: state["ensemble"].update(elites=[float("inf")]),
    lambda state: state["ensemble"].update(stats=None),  # fitted, but no statistics
    lambda state: state["ensemble"]["stats"].update(input_std=torch.zeros(8)),
    lambda state: state["sac"].update(log_alpha=torch.zeros(3)),
    lambda state: state.pop("sac"),
])
def test_malformed_content_is_refused_never_raised_otherwise(tmp_path, corrupt):
    """The file is not trusted to be well-formed: whatever is wrong is a ``LearnerStateError``."""
    path = tmp_path / "learner.pt"
    saved = make_trainer()
    learn(saved, transitions(60, 1))
    save_learner_state(saved, path)
    state = read_learner_state(path)
    corrupt(state)
    trainer = make_trainer()
    with pytest.raises(LearnerStateError):
        restore_learner(trainer, state)
    assert (trainer.fits, trainer.sac_updates, trainer.dynamics_module, trainer.ensemble.stats) == (0, 0, None, None)
    torch.save({"format": torch.tensor([1, 1])}, path)
    with pytest.raises(LearnerStateError, match="format"):
        read_learner_state(path)


class Payload:
    """Anything but tensors, numbers and strings: unpickling it would run code of the file's choice."""

    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_a_damaged_or_foreign_file_is_refused_and_a_missing_one_is_none(tmp_path):
    path = tmp_path / "learner.pt"
    assert read_learner_state(path) is None
    trainer = make_trainer()
    learn(trainer, transitions(60, 1))
    save_learner_state(trainer, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LearnerStateError, match="cannot be read"):
        read_learner_state(path)
    torch.save({"format": 1, "task": Payload()}, path)
    with pytest.raises(LearnerStateError, match="cannot be read"):
        read_learner_state(path)
    path.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(LearnerStateError):
        read_learner_state(path)
    torch.save({"format": 99}, path)
    with pytest.raises(LearnerStateError, match="format"):
        read_learner_state(path)


def test_a_save_replaces_the_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "learner.pt"
    trainer = make_trainer()
    learn(trainer, transitions(60, 1))
    save_learner_state(trainer, path)
    kept = path.read_bytes()
    learn(trainer, transitions(40, 2))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("loop_ros.core.learner_state.os.replace", full_disk)
    with pytest.raises(OSError):
        save_learner_state(trainer, path)
    assert path.read_bytes() == kept and sorted(p.name for p in tmp_path.iterdir()) == ["learner.pt"]


def test_the_skipped_updates_come_back_with_the_state(tmp_path):
    path = tmp_path / "learner.pt"
    saved = make_trainer()
    learn(saved, transitions(60, 1))
    save_learner_state(saved, path, sac_updates_skipped=1234)
    assert restore_learner(make_trainer(), read_learner_state(path)) == {"steps": 60, "sac_updates_skipped": 1234}


def test_normalisation_statistics_of_the_wrong_size_or_not_finite_are_refused(tmp_path):
    path = tmp_path / "learner.pt"
    saved = make_trainer()
    learn(saved, transitions(60, 1))
    save_learner_state(saved, path)
    for key, value in (("delta_std", torch.full((6,), float("nan"))), ("input_mean", torch.zeros(7))):
        state = read_learner_state(path)
        state["ensemble"]["stats"][key] = value
        trainer = make_trainer()
        with pytest.raises(LearnerStateError, match="normalisation"):
            restore_learner(trainer, state)
        assert trainer.ensemble.stats is None and trainer.dynamics_module is None

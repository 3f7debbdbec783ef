"""What the tests of the offline value learners (test_crr.py, test_rosmo.py) check alike."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from loop_ros.core.config import ConfigError
from loop_ros.core.params_file import from_params
from loop_ros.core.sac import TanhGaussianActor, TwinQ


def random_batch(rng, n=8):
    """A minibatch of a 2-D state, 1-D action task with actions in [-2, 2], 30 % terminal."""
    return {"s": rng.standard_normal((n, 2)), "a": rng.uniform(-2, 2, (n, 1)), "r": rng.standard_normal(n),
            "s2": rng.standard_normal((n, 2)), "d": (rng.random(n) < 0.3).astype(float)}


def bandit_data(rng, n=2000) -> dict:
    """One-step bandit (every transition terminal), 2-D state, reward -(a - 0.5)^2; the dataset's actions
    are a mixture of bad (around -0.6), uniform and good (around 0.5) ones, so imitating the data gives
    about its mean (0) while the best action is 0.5."""
    kind = rng.integers(3, size=n)
    action = np.select([kind == 0, kind == 1], [rng.normal(-0.6, 0.1, n), rng.uniform(-1, 1, n)],
                       rng.normal(0.5, 0.05, n)).clip(-1, 1)[:, None]
    state = rng.standard_normal((n, 2))
    return {"s": state, "a": action, "r": -(action[:, 0] - 0.5) ** 2, "s2": state, "d": np.ones(n)}


def greedy_action_after_training(learner, data: dict, rng, batch_size: int, steps: int = 300) -> float:
    """``steps`` updates on uniform minibatches of ``data``, then the learner's mean greedy action on
    the first 50 states."""
    n = len(data["r"])
    for _ in range(steps):
        index = rng.integers(n, size=batch_size)
        learner.update({key: value[index] for key, value in data.items()})
    return float(np.mean([learner.act(s, deterministic=True, rng=rng) for s in data["s"][:50]]))


def same_seed_same_parameters(learners) -> dict:
    """``learners``: two of one seed, one of another, updated on the same 3 batches (interleaved: no
    shared generator). The first two end identical, the third differs; returns the last metrics."""
    rng = np.random.default_rng(0)
    for _ in range(3):
        batch = random_batch(rng)
        metrics = [learner.update(batch) for learner in learners]
    assert all(math.isfinite(value) for value in metrics[0].values())
    assert metrics[0] == metrics[1]
    same, other = ([p.detach() for p in learner.actor.parameters()] for learner in learners[1:])
    for a, b in zip((p.detach() for p in learners[0].actor.parameters()), same):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(same, other))
    assert isinstance(learners[0].actor_module(), TanhGaussianActor) and isinstance(learners[0].critic_module(), TwinQ)
    return metrics[0]


def assert_refused(config_class, section: str, changes: dict, message: str) -> None:
    """``changes`` to ``config_class`` are refused with ``message``, directly and from a params file."""
    with pytest.raises(ConfigError) as err:
        config_class(**changes)
    assert message in str(err.value)
    with pytest.raises(ConfigError, match=message.split()[0]):
        from_params({f"{section}.{name}": value for name, value in changes.items()})  # the params-file path

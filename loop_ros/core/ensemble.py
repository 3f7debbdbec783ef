"""Probabilistic dynamics ensemble (paper Appendix C.1, Table 2; PETS / MBPO style).

K members, each an MLP trained on the same transitions from its own bootstrap sample,
predict a diagonal Gaussian over the state change ``delta = s' - s`` and regress the
reward directly. Inputs and targets are standardised with statistics of the training
split; the planning graph (``dynamics.onnx``) bakes those statistics in, so it takes and
returns raw states.

All members share one set of batched weights ``(K, in, out)``: in training a layer is one
``torch.bmm`` over the member axis; the exported planning graph has each member's chain of
2-D Gemms, with the normalisers folded in (``EnsembleDynamics``).
"""
from __future__ import annotations

import copy
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from loop_ros.core.config import EnsembleConfig

INPUT_STD_FLOOR = 1e-3
"""An input that barely varies in the data is amplified at most 1000x by the normaliser."""
TARGET_STD_FLOOR = 1e-6
"""Target stds only rescale outputs, so a tiny floor is safe (it just avoids dividing by 0)."""
MIN_IMPROVEMENT = 0.01
"""Relative holdout improvement that counts for early stopping (MBPO's 1 %)."""
LOGVAR_BOUND_PENALTY = 0.01
"""PETS: pulls the learnable log-variance bounds towards each other so they stay tight."""
INIT_MAX_LOGVAR, INIT_MIN_LOGVAR = 0.5, -10.0
"""PETS initial soft bounds, in standardised target units."""


class BatchedLinear(nn.Module):
    """K independent linear layers as one batched matmul: ``(K, B, in) -> (K, B, out)``."""

    def __init__(self, members: int, in_dim: int, out_dim: int, generator: torch.Generator):
        super().__init__()
        bound = in_dim ** -0.5  # torch.nn.Linear's default scale
        weight = torch.empty(members, in_dim, out_dim).uniform_(-bound, bound, generator=generator)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(members, 1, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bmm(x, self.weight) + self.bias


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x) written as relu(x) + log1p(e^-|x|): the same function, but it exports to
    vectorised elementwise ONNX ops; ONNX Runtime's Softplus kernel took 9 % of a plan."""
    return torch.relu(x) + torch.log1p(torch.exp(-torch.abs(x)))


def soft_bound(logvar: torch.Tensor, min_logvar: torch.Tensor, max_logvar: torch.Tensor) -> torch.Tensor:
    """PETS softplus bounds: smooth, so gradients still flow near the limits."""
    logvar = max_logvar - softplus(max_logvar - logvar)
    return min_logvar + softplus(logvar - min_logvar)


class GaussianEnsembleNet(nn.Module):
    """Standardised ``[s, a]`` -> standardised delta mean and log-variance, and reward.

    ReLU rather than SiLU: it is what the paper uses (Appendix C.2) and it is the cheapest
    activation in ONNX Runtime on the planner's hot path.
    """

    def __init__(self, members: int, obs_dim: int, act_dim: int, hidden: tuple[int, ...],
                 generator: torch.Generator):
        super().__init__()
        self.members, self.obs_dim, self.act_dim = members, obs_dim, act_dim
        widths = (obs_dim + act_dim, *hidden)
        self.hidden_layers = nn.ModuleList(
            BatchedLinear(members, i, o, generator) for i, o in zip(widths[:-1], widths[1:]))
        self.output_layer = BatchedLinear(members, widths[-1], 2 * obs_dim + 1, generator)
        self.max_logvar = nn.Parameter(torch.full((members, 1, obs_dim), INIT_MAX_LOGVAR))
        self.min_logvar = nn.Parameter(torch.full((members, 1, obs_dim), INIT_MIN_LOGVAR))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (K, B, S+A) -> delta mean (K, B, S), delta log-variance (K, B, S), reward (K, B)."""
        for layer in self.hidden_layers:
            x = torch.relu(layer(x))
        mean, raw_logvar, reward = self.output_layer(x).split([self.obs_dim, self.obs_dim, 1], dim=-1)
        return mean, soft_bound(raw_logvar, self.min_logvar, self.max_logvar), reward.squeeze(-1)

    def members_subset(self, members: list[int]) -> GaussianEnsembleNet:
        """A copy holding only the given members (every parameter has the member axis first)."""
        subset = copy.deepcopy(self)
        index = torch.as_tensor(members, device=self.max_logvar.device)
        for param in subset.parameters():
            param.data = param.data[index].clone()
        subset.members = len(members)
        return subset


class EnsembleDynamics(nn.Module):
    """The ``dynamics.onnx`` graph: raw (state, action, noise) -> (next_state, reward).

    ``next_state = state + mean + exp(0.5*logvar) * noise`` per member (noise = 0 gives the
    member mean); K is fixed by the members it holds, the batch axis B is dynamic.

    ``forward`` is the planning form, the planner's hot path: the input normaliser is folded
    into the first layer, the output de-normalisation into the last, and the soft-bounded
    variance is ``delta_std^2 * (e^min + e^max * sigmoid(raw - max))``, which equals
    ``exp(logvar)`` of ``soft_bound`` exactly (both softplus cancel against the exp), in 5 ops
    instead of 25. ``delta_distribution`` keeps the training form as the reference.
    """

    def __init__(self, net: GaussianEnsembleNet, stats: dict[str, np.ndarray]):
        super().__init__()
        self.net = net
        self.ensemble_size, self.obs_dim, self.act_dim = net.members, net.obs_dim, net.act_dim
        device = net.max_logvar.device
        for name, value in stats.items():
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32, device=device))
        self._fold()

    @torch.no_grad()
    def _fold(self) -> None:
        """Planning-form weights (K, in, out) / biases (K, out) and variance terms (K, 1, S)."""
        layers = [*self.net.hidden_layers, self.net.output_layer]
        weights = [layer.weight.clone() for layer in layers]
        biases = [layer.bias[:, 0].clone() for layer in layers]
        # first layer: ((x - m) / s) @ W + b = x @ (W / s) + (b - (m / s) @ W)
        biases[0] -= (self.input_mean / self.input_std) @ weights[0]
        weights[0] /= self.input_std[:, None]
        # last layer: [mean | raw log-variance | reward] columns
        S = self.obs_dim
        scale = torch.cat([self.delta_std, torch.ones_like(self.delta_std), self.reward_std])
        shift = torch.cat([self.delta_mean.expand(self.ensemble_size, S), -self.net.max_logvar[:, 0],
                           self.reward_mean.expand(self.ensemble_size, 1)], dim=-1)
        weights[-1] *= scale
        biases[-1] = biases[-1] * scale + shift
        for i, (weight, bias) in enumerate(zip(weights, biases)):
            self.register_buffer(f"weight{i}", weight)
            self.register_buffer(f"bias{i}", bias)
        self.register_buffer("var_floor", self.delta_std**2 * torch.exp(self.net.min_logvar))
        self.register_buffer("var_span", self.delta_std**2 * torch.exp(self.net.max_logvar))
        self.layers = len(layers)

    def _standardised_outputs(self, state: torch.Tensor, action: torch.Tensor):
        x = (torch.cat([state, action], dim=-1) - self.input_mean) / self.input_std
        mean, logvar, reward = self.net(x)
        return mean, logvar, self.reward_mean + self.reward_std * reward

    def delta_distribution(self, state: torch.Tensor, action: torch.Tensor):
        """(K, B, S), (K, B, A) -> delta mean (K, B, S), delta log-variance (K, B, S), reward (K, B),
        all in raw (not standardised) units."""
        mean, logvar, reward = self._standardised_outputs(state, action)
        return self.delta_mean + self.delta_std * mean, logvar + 2.0 * torch.log(self.delta_std), reward

    def forward(self, state: torch.Tensor, action: torch.Tensor, noise: torch.Tensor):
        """(K, B, S), (K, B, A), (K, B, S) -> next_state (K, B, S), reward (K, B)."""
        x = torch.cat([state, action], dim=-1)
        out = self._per_member(x) if torch.onnx.is_in_onnx_export() else self._batched(x)
        mean, shifted_logvar, reward = out.split([self.obs_dim, self.obs_dim, 1], dim=-1)
        var = self.var_floor + self.var_span * torch.sigmoid(shifted_logvar)
        return state + mean + torch.sqrt(var) * noise, reward.squeeze(-1)

    def _layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"weight{i}"), getattr(self, f"bias{i}")

    def _batched(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.layers):
            weight, bias = self._layer(i)
            x = torch.baddbmm(bias[:, None], x, weight)
            x = torch.relu(x) if i < self.layers - 1 else x
        return x

    def _per_member(self, x: torch.Tensor) -> torch.Tensor:
        """The layers as each member's chain of 2-D products (``addmm``, ONNX Gemm), for export:
        ONNX Runtime fuses a Gemm's bias and the ReLU after it, which it does not for the batched
        MatMul; one dynamics step of paper-halfcheetah took 3.40 instead of 3.97 ms on one thread."""
        outputs = []
        for k, h in enumerate(x.unbind(0)):
            for i in range(self.layers):
                weight, bias = self._layer(i)
                h = torch.addmm(bias[k], h, weight[k])
                h = torch.relu(h) if i < self.layers - 1 else h
            outputs.append(h)
        return torch.stack(outputs)


def split_holdout(n: int, ratio: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, holdout) index arrays; the holdout gets round(ratio*n), at least 1."""
    if n < 2:
        raise ValueError(f"need at least 2 transitions to fit, got {n}")
    order = rng.permutation(n)
    n_holdout = min(max(1, int(round(ratio * n))), n - 1)
    return order[n_holdout:], order[:n_holdout]


def _mean_std(x: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0).astype(np.float32), np.maximum(x.std(axis=0), floor).astype(np.float32)


class DynamicsEnsemble:
    """Trains the K members and hands out the elites' planning graph.

    Randomness is explicit: ``seed`` initialises the weights, ``fit``'s generator draws the
    holdout split, the bootstrap samples and the minibatch order.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: EnsembleConfig, seed: int = 0,
                 device: str | torch.device = "cpu"):
        self.obs_dim, self.act_dim, self.cfg = obs_dim, act_dim, cfg
        self.device = torch.device(device)
        generator = torch.Generator().manual_seed(seed)
        self.net = GaussianEnsembleNet(cfg.ensemble_size, obs_dim, act_dim, cfg.hidden, generator).to(self.device)
        weights = [layer.weight for layer in (*self.net.hidden_layers, self.net.output_layer)]
        others = [p for p in self.net.parameters() if all(p is not w for w in weights)]
        self.optimizer = torch.optim.Adam(
            [{"params": weights, "weight_decay": cfg.weight_decay}, {"params": others, "weight_decay": 0.0}],
            lr=cfg.lr)
        self.stats: dict[str, np.ndarray] | None = None
        self.elites = list(range(cfg.num_elites))

    # ---- data --------------------------------------------------------------------------
    def _fit_stats(self, inputs: np.ndarray, deltas: np.ndarray, rewards: np.ndarray) -> None:
        input_mean, input_std = _mean_std(inputs, INPUT_STD_FLOOR)
        delta_mean, delta_std = _mean_std(deltas, TARGET_STD_FLOOR)
        reward_mean, reward_std = _mean_std(rewards, TARGET_STD_FLOOR)
        self.stats = dict(input_mean=input_mean, input_std=input_std, delta_mean=delta_mean,
                          delta_std=delta_std, reward_mean=reward_mean, reward_std=reward_std)

    def _standardised(self, states, actions, rewards, next_states) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw arrays (N, ...) -> inputs (N, S+A) and targets (N, S+1) in standardised units."""
        st = self.stats
        inputs = (np.concatenate([states, actions], axis=-1) - st["input_mean"]) / st["input_std"]
        deltas = (next_states - states - st["delta_mean"]) / st["delta_std"]
        rewards = (np.reshape(rewards, (-1, 1)) - st["reward_mean"]) / st["reward_std"]
        targets = np.concatenate([deltas, rewards], axis=-1)
        return (torch.as_tensor(inputs, dtype=torch.float32, device=self.device),
                torch.as_tensor(targets, dtype=torch.float32, device=self.device))

    # ---- training ----------------------------------------------------------------------
    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gaussian NLL of delta + reward MSE, per member mean, summed over members.
        x: (K, B, S+A), y: (K, B, S+1)."""
        mean, logvar, reward = self.net(x)
        delta, target_reward = y[..., :-1], y[..., -1]
        nll = ((mean - delta) ** 2 * torch.exp(-logvar) + logvar).mean(dim=(1, 2))
        reward_mse = ((reward - target_reward) ** 2).mean(dim=1)
        bounds = self.net.max_logvar.sum() - self.net.min_logvar.sum()
        return (nll + reward_mse).sum() + LOGVAR_BOUND_PENALTY * bounds

    def _train_epoch(self, x: torch.Tensor, y: torch.Tensor, bootstrap: np.ndarray,
                     rng: np.random.Generator, should_stop: Callable[[], bool] = lambda: False) -> float | None:
        """One pass over each member's bootstrap sample (K, N) in a fresh random order; None
        when ``should_stop()`` turned true before a minibatch (the pass is left unfinished)."""
        order = torch.as_tensor(bootstrap[:, rng.permutation(bootstrap.shape[1])], device=self.device)
        losses = []
        for start in range(0, order.shape[1], self.cfg.batch_size):
            if should_stop():
                return None
            batch = order[:, start:start + self.cfg.batch_size]
            loss = self._loss(x[batch], y[batch])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
        return float(np.mean(losses)) / self.net.members

    @torch.no_grad()
    def _holdout_mse(self, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """Standardised MSE of each member's mean over delta and reward: x (N, S+A), y (N, S+1) -> (K,)."""
        mean, _, reward = self.net(x.expand(self.net.members, -1, -1))
        prediction = torch.cat([mean, reward.unsqueeze(-1)], dim=-1)
        return ((prediction - y) ** 2).mean(dim=(1, 2)).cpu().numpy()

    def fit(self, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_states: np.ndarray,
            rng: np.random.Generator, max_epochs: int | None = None, max_seconds: float | None = None,
            should_stop: Callable[[], bool] | None = None) -> dict:
        """Fit all members on transitions (N, S), (N, A), (N,), (N, S); pick the elites.

        ``rng`` draws the holdout split first (``split_holdout``), then the bootstrap
        samples and minibatch orders. Training stops after ``patience`` epochs in which no
        member improved its holdout MSE by more than 1 %, after ``max_epochs`` (default
        cfg.max_epochs) or once ``max_seconds`` have passed; each member then gets back
        its weights from its best epoch (including the weights before this fit).

        ``should_stop`` (e.g. a process shutting down) is checked before every minibatch:
        once it returns True the fit ends at once and is dropped: the ensemble gets back its
        weights, normalisation and elites from before the fit (so a learner state saved then
        is the last complete fit, ``core.learner_state``; only Adam's moments moved); the
        metrics say ``interrupted: True``.
        """
        started = time.perf_counter()
        deadline = float("inf") if max_seconds is None else started + max_seconds
        weights_before, stats_before = [p.detach().clone() for p in self.net.parameters()], self.stats
        train, holdout = split_holdout(len(states), self.cfg.holdout_ratio, rng)
        self._fit_stats(np.concatenate([states, actions], axis=-1)[train],
                        (next_states - states)[train], np.reshape(rewards, (-1, 1))[train])
        x, y = self._standardised(states, actions, rewards, next_states)
        x_train, y_train, x_holdout, y_holdout = x[train], y[train], x[holdout], y[holdout]
        bootstrap = rng.integers(len(train), size=(self.net.members, len(train)))

        best_mse = self._holdout_mse(x_holdout, y_holdout)
        best_params = [p.detach().clone() for p in self.net.parameters()]
        epochs, stale, train_loss, holdout_mse = 0, 0, float("nan"), best_mse
        for epochs in range(1, (self.cfg.max_epochs if max_epochs is None else max_epochs) + 1):
            loss = self._train_epoch(x_train, y_train, bootstrap, rng, should_stop or (lambda: False))
            if loss is None:
                self._restore(weights_before)
                self.stats = stats_before
                return {"epochs": epochs - 1, "interrupted": True, "elites": self.elites,
                        "seconds": time.perf_counter() - started}
            train_loss = loss
            holdout_mse = self._holdout_mse(x_holdout, y_holdout)
            improved = (best_mse - holdout_mse) / best_mse > MIN_IMPROVEMENT
            self._keep_members(best_params, improved)
            best_mse = np.where(improved, holdout_mse, best_mse)
            stale = 0 if improved.any() else stale + 1
            if stale >= self.cfg.patience or time.perf_counter() >= deadline:
                break
        self._restore(best_params)
        self.elites = sorted(np.argsort(best_mse, kind="stable")[:self.cfg.num_elites].tolist())
        return {
            "epochs": epochs, "stopped_early": stale >= self.cfg.patience, "interrupted": False,
            "train_loss": train_loss,
            "holdout_mse": best_mse.tolist(), "last_holdout_mse": holdout_mse.tolist(),
            "elites": self.elites, "elite_holdout_mse": float(best_mse[self.elites].mean()),
            "n_train": len(train), "n_holdout": len(holdout), "seconds": time.perf_counter() - started,
        }

    @torch.no_grad()
    def _keep_members(self, best_params: list[torch.Tensor], members: np.ndarray) -> None:
        mask = torch.as_tensor(members, device=self.device)
        for best, param in zip(best_params, self.net.parameters()):
            best[mask] = param[mask]

    @torch.no_grad()
    def _restore(self, best_params: list[torch.Tensor]) -> None:
        for best, param in zip(best_params, self.net.parameters()):
            param.copy_(best)

    # ---- use -----------------------------------------------------------------------------
    def evaluate(self, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                 next_states: np.ndarray) -> np.ndarray:
        """Standardised MSE of every member's mean on the given transitions: (K,)."""
        return self._holdout_mse(*self._standardised(states, actions, rewards, next_states))

    def planning_module(self) -> EnsembleDynamics:
        """The elites' ``dynamics.onnx`` graph (a copy: later fits do not change it)."""
        if self.stats is None:
            raise RuntimeError("fit the ensemble before asking for its planning module")
        return EnsembleDynamics(self.net.members_subset(self.elites), self.stats).eval().requires_grad_(False)

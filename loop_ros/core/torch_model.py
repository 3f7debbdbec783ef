"""The PlanningModel protocol over the torch modules of a bundle (export: ``bundle.export_graph``)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TorchPlanningModel:
    """PlanningModel over the modules of ``DynamicsEnsemble.planning_module()``,
    ``Sac.actor_module()`` and ``Sac.critic_module()``: numpy float32 in and out."""

    def __init__(self, dynamics_module: nn.Module, actor_module: nn.Module, critic_module: nn.Module):
        self.dynamics_module = dynamics_module.eval()
        self.actor_module = actor_module.eval()
        self.critic_module = critic_module.eval()
        self.ensemble_size = dynamics_module.ensemble_size
        self.obs_dim, self.act_dim = dynamics_module.obs_dim, dynamics_module.act_dim
        self.device = next(dynamics_module.parameters()).device

    def _run(self, module: nn.Module, *arrays: np.ndarray):
        with torch.no_grad():
            return module(*(torch.as_tensor(np.asarray(x, np.float32), device=self.device) for x in arrays))

    def dynamics(self, state: np.ndarray, action: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, B, S), (K, B, A), (K, B, S) -> next_state (K, B, S), reward (K, B)."""
        next_state, reward = self._run(self.dynamics_module, state, action, noise)
        return next_state.cpu().numpy(), reward.cpu().numpy()

    def actor(self, state: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """(B, S), (B, A) -> action (B, A)."""
        return self._run(self.actor_module, state, noise).cpu().numpy()

    def critic(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        """(B, S), (B, A) -> min(Q1, Q2) (B,)."""
        return self._run(self.critic_module, state, action).cpu().numpy()


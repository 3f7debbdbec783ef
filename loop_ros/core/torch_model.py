"""The torch side of a model bundle: the PlanningModel protocol over torch modules, and
the ONNX export of those modules (legacy exporter: the dynamo one needs onnxscript)."""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

ONNX_OPSET = 17


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


def export_onnx(module: nn.Module, path: str) -> None:
    """Write one bundle graph; the module names its inputs, outputs and dynamic batch axes
    (``input_names``, ``output_names``, ``dynamic_axes``, ``example_inputs()``)."""
    with warnings.catch_warnings():  # the legacy exporter's deprecation notices, on every export
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        torch.onnx.export(module, module.example_inputs(), path, input_names=list(module.input_names),
                          output_names=list(module.output_names), dynamic_axes=module.dynamic_axes,
                          opset_version=ONNX_OPSET, dynamo=False)

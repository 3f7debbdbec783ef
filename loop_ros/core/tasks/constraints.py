"""Constraint cost terms c(s) on the planar position of a state.

Each term is a small class whose ``cost(xy)`` maps positions ``(..., 2)`` to 0/1
costs ``(...)``; a task's cost is the max over its terms (1 while any is violated).
Terms are built from ``SafetyConfig`` so an edit of the geometry is one parameter set.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loop_ros.core.config import SafetyConfig


@dataclass(frozen=True)
class KeepInCircle:
    """Cost 1 while the position is outside a circle of ``radius`` around the origin."""

    radius: float

    def cost(self, xy: np.ndarray) -> np.ndarray:
        return (np.hypot(xy[..., 0], xy[..., 1]) > self.radius).astype(xy.dtype)


@dataclass(frozen=True)
class CircleObstacle:
    """Cost 1 while the position is inside the disc (x, y, r)."""

    x: float
    y: float
    r: float

    def cost(self, xy: np.ndarray) -> np.ndarray:
        return (np.hypot(xy[..., 0] - self.x, xy[..., 1] - self.y) < self.r).astype(xy.dtype)


def constraint_terms(safety: SafetyConfig) -> list:
    terms: list = []
    if safety.keep_in_radius > 0:
        terms.append(KeepInCircle(safety.keep_in_radius))
    obstacles = np.asarray(safety.obstacles, dtype=float).reshape(-1, 3)
    terms.extend(CircleObstacle(*map(float, row)) for row in obstacles)
    return terms


def position_cost(xy: np.ndarray, terms: list) -> np.ndarray:
    """Max over the terms of their 0/1 costs; zeros when there are none. xy: (..., 2) -> (...)."""
    cost = np.zeros(xy.shape[:-1], dtype=xy.dtype)
    for term in terms:
        cost = np.maximum(cost, term.cost(xy))
    return cost

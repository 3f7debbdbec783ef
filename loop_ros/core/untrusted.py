"""Numbers from the wire into checked arrays: the trust boundary of every node (DESIGN.md 10).

Whatever a DDS peer sends (a state, an action, an episode record) is parsed here before any
node looks at it or stores it. A value is accepted only as a float64 array of the expected
size whose entries are finite and no larger in magnitude than ``MAX_ABS_VALUE``, so that it
also stays finite as the float32 the networks compute in (1e39 is a finite float64 and an
inf float32). Everything else is None, and the caller counts why.
"""
from __future__ import annotations

import json

import numpy as np

MAX_ABS_VALUE = 1e6
"""Largest magnitude of a state or action entry taken from the wire. A robot's positions,
velocities and commands are far below it; beyond it a value is corrupt, and stored into the
replay it would blow up the dynamics model's input normaliser."""
MAX_EPISODE_BYTES = 64 * 1024
"""Longest ``episode`` record accepted (the sim's are about 200 bytes)."""


def checked_vector(values, size: int, limit: float = MAX_ABS_VALUE) -> np.ndarray | None:
    """``values`` as a float64 ``(size,)`` array, or None when its size is wrong, an entry is
    not a finite number, or an entry's magnitude exceeds ``limit``."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if array.shape != (size,) or not np.all(np.isfinite(array)) or np.any(np.abs(array) > limit):
        return None
    return array


def checked_episode(text: str) -> dict | None:
    """An ``episode`` record (one JSON object) as a dict, or None when it is too long or no object."""
    if not isinstance(text, str) or len(text) > MAX_EPISODE_BYTES:
        return None
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None

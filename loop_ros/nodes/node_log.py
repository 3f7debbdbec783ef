"""Logging at a level chosen at run time, for the ``log(level, text)`` callbacks of the workers.

rclpy keys each logging call site to the severity of its first call and raises
``ValueError('Logger severity cannot be changed between calls.')`` when the same line logs
at another level later, so one ``getattr(logger, level)(text)`` line cannot serve several
levels: each level gets its own call site here. Errors and warnings are rate-limited: a line
whose beginning (``KEY_CHARS``) was logged less than ``PERIOD_S`` ago is dropped, so a peer that
floods a node with bad models cannot flood its log, and each kind of refusal is still logged.
"""
from __future__ import annotations

import time

PERIOD_S = 1.0
KEY_CHARS = 60
_last_logged: dict[tuple[str, str], float] = {}


def log_at(logger, level: str, text: str) -> None:
    """``level``: 'error', 'warn' or 'info' (anything else logs at info)."""
    if level in ("error", "warn"):
        key, now = (level, text[:KEY_CHARS]), time.monotonic()
        if now - _last_logged.get(key, -PERIOD_S) < PERIOD_S:
            return
        if len(_last_logged) > 1000:  # distinct beginnings are few; never let the table grow without end
            _last_logged.clear()
        _last_logged[key] = now
    if level == "error":
        logger.error(text)
    elif level == "warn":
        logger.warning(text)
    else:
        logger.info(text)

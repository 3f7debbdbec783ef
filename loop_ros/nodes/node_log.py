"""Logging at a level chosen at run time, for the ``log(level, text)`` callbacks of the workers.

rclpy keys each logging call site to the severity of its first call and raises
``ValueError('Logger severity cannot be changed between calls.')`` when the same line logs
at another level later, so one ``getattr(logger, level)(text)`` line cannot serve several
levels: each level gets its own call site here. Errors and warnings are rate-limited (at most one
of each a second), so a peer that floods a node with bad models cannot flood its log.
"""
from __future__ import annotations


def log_at(logger, level: str, text: str) -> None:
    """``level``: 'error', 'warn' or 'info' (anything else logs at info)."""
    if level == "error":
        logger.error(text, throttle_duration_sec=1.0)
    elif level == "warn":
        logger.warning(text, throttle_duration_sec=1.0)
    else:
        logger.info(text)

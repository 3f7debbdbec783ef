"""Logging at a level chosen at run time, for the ``log(level, text)`` callbacks of the workers.

rclpy keys each logging call site to the severity of its first call and raises
``ValueError('Logger severity cannot be changed between calls.')`` when the same line logs
at another level later, so one ``getattr(logger, level)(text)`` line cannot serve several
levels: each level gets its own call site here.
"""
from __future__ import annotations


def log_at(logger, level: str, text: str) -> None:
    """``level``: 'error', 'warn' or 'info' (anything else logs at info)."""
    if level == "error":
        logger.error(text)
    elif level == "warn":
        logger.warning(text)
    else:
        logger.info(text)

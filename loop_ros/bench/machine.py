"""The machine a benchmark ran on, recorded with its results."""
from __future__ import annotations

import os
import platform


def machine() -> dict:
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version()}

"""Hold a process to a share of one core with a Linux cgroup CPU quota (``loop-ros up --trainer-cpus``).

Used to measure how online learning copes with a slow learner (a slower host, a busier
workstation): the trainer gets ``cpus`` x one core's time per 100 ms period, however idle
the machine is. cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``), created under the
cgroup root and removed afterwards; needs write access there (root).
"""
from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


class CpuQuotaError(RuntimeError):
    """No cgroup CPU controller could be used; the message says why."""


class CpuQuota:
    """A cgroup holding processes to ``cpus`` cores; ``add(pid)`` moves one in (its threads
    and children follow), ``close()`` moves them back out and removes the cgroup."""

    def __init__(self, cpus: float, name: str | None = None):
        cores = os.cpu_count() or 1
        if not 0.01 <= cpus <= cores:
            raise CpuQuotaError(f"a CPU quota of {cpus} cores is outside [0.01, {cores}]")
        name = name or f"loop_ros_quota_{os.getpid()}"
        quota_us = int(cpus * PERIOD_US)
        if (CGROUP_ROOT / "cgroup.controllers").is_file():  # v2: one unified hierarchy
            self.path, self._parent = CGROUP_ROOT / name, CGROUP_ROOT
            self._make(lambda: (self.path / "cpu.max").write_text(f"{quota_us} {PERIOD_US}\n"))
        elif (CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").is_file():  # v1: the cpu controller's own tree
            self.path, self._parent = CGROUP_ROOT / "cpu" / name, CGROUP_ROOT / "cpu"
            self._make(lambda: ((self.path / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n"),
                                (self.path / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")))
        else:
            raise CpuQuotaError(f"no cgroup CPU controller under {CGROUP_ROOT}")
        self.cpus = cpus

    def _make(self, configure) -> None:
        try:
            self.path.mkdir(exist_ok=True)
            configure()
        except OSError as error:
            raise CpuQuotaError(f"cannot set a CPU quota in {self.path}: {error}") from error

    def add(self, pid: int) -> None:
        try:
            (self.path / "cgroup.procs").write_text(f"{pid}\n")
        except OSError as error:
            raise CpuQuotaError(f"cannot move process {pid} into {self.path}: {error}") from error

    def close(self) -> None:
        """Move what is left to the parent cgroup and remove this one."""
        try:
            for pid in (self.path / "cgroup.procs").read_text().split():
                try:
                    (self._parent / "cgroup.procs").write_text(f"{pid}\n")
                except OSError:  # it has exited meanwhile
                    pass
            self.path.rmdir()
        except OSError:
            pass

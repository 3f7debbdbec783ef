"""Thread and process priorities (Linux): the learning and loading threads yield the cores to the
control path, and the control path may take a real-time priority."""
from __future__ import annotations

import os
import sys
import threading
from typing import Callable


def lower_thread_priority(increment: int, tid: int | None = None) -> None:
    """Add ``increment`` to the niceness of thread ``tid`` (default: the calling one), so it yields
    the cores to the control path (Linux: niceness is per thread, and the threads it starts
    inherit it; elsewhere setpriority takes a process, so nothing is done)."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id() if tid is None else tid
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except ProcessLookupError:  # the thread has just ended
        pass


def lower_process_priority(increment: int) -> None:
    """``lower_thread_priority`` for every thread of this process, the DDS threads included, and
    for its session's autogroup when it leads that session.

    For a process whose Python threads share the GIL: niced alone, a thread can be descheduled
    while it holds the GIL and stall the others (measured: the trainer's recording lost states
    while its niced learning thread held the GIL). With autogroup scheduling (Linux's default on
    many distributions, and on the dev VM), the kernel first shares the cores between sessions
    and applies a thread's nice only within its own: `loop-ros up` starts each node in its own
    session, and a nice-10 trainer thread took a whole core for 132 ms while the planner's plan
    worker waited 57 ms for one (a deadline miss). Only the session leader changes the
    autogroup, so a node started inside a shared session (a launch file's) never nices the others.
    """
    for tid in os.listdir("/proc/self/task") if sys.platform.startswith("linux") else ():
        lower_thread_priority(increment, int(tid))
    if sys.platform.startswith("linux") and os.getsid(0) == os.getpid():
        _lower_autogroup_priority(increment)


AUTOGROUP = "/proc/self/autogroup"


def autogroup_nice() -> int | None:
    """This process's autogroup nice, or None where the kernel exposes none it can read (no
    autogroup scheduling, or a sandboxed /proc whose file reads empty, as on the CI machine)."""
    try:
        with open(AUTOGROUP, encoding="ascii") as f:  # e.g. "/autogroup-1028 nice 0"
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _lower_autogroup_priority(increment: int) -> None:
    nice = autogroup_nice()
    if nice is None:
        return
    try:
        with open(AUTOGROUP, "w", encoding="ascii") as f:
            f.write(str(min(19, nice + increment)))
    except OSError:  # a kernel that refuses the write: the threads' nice still applies
        pass


def use_realtime_priority(priority: int) -> str | None:
    """Run the calling thread under SCHED_FIFO at ``priority`` (1-99): it then runs whenever it is
    ready, ahead of every ordinary thread. None when done, else why not (the scheduler refused:
    it takes root, CAP_SYS_NICE or an rtprio limit, ``ulimit -r``, of at least ``priority``).

    With SCHED_RESET_ON_FORK, so the threads and processes it starts (a model loader, a preparer
    process) are ordinary ones; the kernel's real-time throttling (95 % of each second by default)
    still leaves the ordinary threads a share should a plan never end."""
    if not sys.platform.startswith("linux"):
        return "real-time priority is only set on Linux"
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO | os.SCHED_RESET_ON_FORK,
                              os.sched_param(priority))
    except OSError as error:
        return (f"SCHED_FIFO {priority} refused ({error.strerror}): it takes root, CAP_SYS_NICE or "
                f"`ulimit -r` >= {priority}")
    return None


PERIODIC_ABOVE = 1
"""The short periodic threads (the planner's tick, the sim's step) run this many priorities above the
planning thread, so a tick preempts a plan in progress. At one priority FIFO threads do not preempt
each other: with two planners' plans on two cores, a tick waited for one to end (tick jitter p99
8-12 ms in the fleet, 0.2 ms for one car; bench/RESULTS.md)."""


class RealtimeThreads:
    """Gives each thread that calls ``enter`` SCHED_FIFO ``priority`` (plus ``above``, at most 99) once
    (0: nothing is done). The first refusal is logged once as a warning; the threads then run at the
    ordinary priority."""

    def __init__(self, priority: int, log: Callable[[str, str], None]):
        self.priority, self._log = priority, log
        self._lock = threading.Lock()
        self._entered: set[int] = set()
        self.threads = 0  # threads running under SCHED_FIFO
        self.refused: str | None = None

    def enter(self, above: int = 0) -> None:
        tid = threading.get_native_id()
        if self.priority <= 0 or tid in self._entered:
            return
        with self._lock:
            self._entered.add(tid)
            priority = min(self.priority + above, 99)
            refused = use_realtime_priority(priority)
            if refused is None:
                self.threads += 1
                self._log("info", f"thread {threading.current_thread().name} runs under SCHED_FIFO {priority}")
            elif self.refused is None:
                self.refused = refused
                self._log("warn", refused + "; running at the ordinary priority")

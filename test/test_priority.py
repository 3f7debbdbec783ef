"""A node's CPU priority: lowering its threads' nice, and its session's autogroup when it leads it;
the planner's threads under SCHED_FIFO."""
import os
import subprocess
import sys
import threading

import pytest

from loop_ros.workers.priority import PERIODIC_ABOVE, RealtimeThreads, autogroup_nice, use_realtime_priority

CHILD = """
import os
from loop_ros.workers.priority import autogroup_nice, lower_process_priority
lower_process_priority(7)
print(os.getpriority(os.PRIO_PROCESS, 0), autogroup_nice())
"""


def run_child(new_session: bool) -> tuple[int, str]:
    nice, autogroup = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=30,
                                     start_new_session=new_session, check=True).stdout.split()
    return int(nice), autogroup


@pytest.mark.parametrize("new_session", [True, False])
def test_every_thread_is_niced(new_session):
    assert run_child(new_session)[0] == os.getpriority(os.PRIO_PROCESS, 0) + 7


@pytest.mark.skipif(autogroup_nice() is None, reason="no readable autogroup (kernel without it, or a sandboxed /proc)")
def test_only_a_session_leader_nices_its_autogroup():
    assert run_child(new_session=True)[1] == "7"  # a new session: its autogroup starts at 0
    # A process inside another session (as under a launch file) leaves the shared autogroup alone.
    assert run_child(new_session=False)[1] == str(autogroup_nice())


def realtime_permitted(priority: int = 5) -> bool:
    """Whether this process may run a thread under SCHED_FIFO ``priority`` (tried in a thread that then ends)."""
    refused = []
    thread = threading.Thread(target=lambda: refused.append(use_realtime_priority(priority)))
    thread.start()
    thread.join()
    return refused[0] is None


def policies_of(realtime: RealtimeThreads, calls: int = 2, above: int = 0) -> tuple[int, int, int]:
    """(policy of a thread that called ``realtime.enter(above)`` ``calls`` times, policy of a thread it
    started, the first thread's priority)."""
    seen = {}

    def child():
        seen["child"] = os.sched_getscheduler(0)

    def entering():
        for _ in range(calls):
            realtime.enter(above)
        seen["entered"] = os.sched_getscheduler(0)
        seen["priority"] = os.sched_getparam(0).sched_priority
        started = threading.Thread(target=child)
        started.start()
        started.join()

    thread = threading.Thread(target=entering)
    thread.start()
    thread.join()
    return seen["entered"], seen["child"], seen["priority"]


@pytest.mark.skipif(not realtime_permitted(), reason="SCHED_FIFO is not permitted here (no root, CAP_SYS_NICE or rtprio)")
def test_a_thread_that_enters_runs_under_sched_fifo_and_its_children_do_not():
    logs = []
    realtime = RealtimeThreads(5, lambda level, text: logs.append(level))
    entered, child, _ = policies_of(realtime)
    assert entered & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO
    assert child == os.SCHED_OTHER  # a loader thread started from the tick's thread stays ordinary
    assert realtime.threads == 1 and realtime.refused is None and logs == ["info"]  # once per thread
    assert policies_of(realtime)[2] == 5 and realtime.threads == 2


@pytest.mark.skipif(not realtime_permitted(99), reason="SCHED_FIFO 99 is not permitted here")
def test_a_periodic_thread_runs_above_the_planning_thread_at_most_at_99():
    for base, expected in ((5, 5 + PERIODIC_ABOVE), (99, 99)):
        realtime = RealtimeThreads(base, lambda level, text: None)
        assert policies_of(realtime, above=PERIODIC_ABOVE)[2] == expected


def test_priority_zero_leaves_the_thread_ordinary():
    realtime = RealtimeThreads(0, lambda level, text: pytest.fail(text))
    assert policies_of(realtime) == (os.SCHED_OTHER, os.SCHED_OTHER, 0)
    assert realtime.threads == 0


def test_a_refusal_is_logged_once_and_the_threads_run_on(monkeypatch):
    def refuse(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    logs = []
    realtime = RealtimeThreads(50, lambda level, text: logs.append((level, text)))
    policies_of(realtime)
    policies_of(realtime)
    assert realtime.threads == 0
    assert logs == [("warn", "SCHED_FIFO 50 refused (Operation not permitted): it takes root, CAP_SYS_NICE or "
                     "`ulimit -r` >= 50; running at the ordinary priority")]
    assert realtime.refused == logs[0][1].split("; running")[0]

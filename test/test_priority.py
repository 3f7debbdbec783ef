"""Lowering a node's CPU priority: its threads' nice, and its session's autogroup when it leads it."""
import os
import subprocess
import sys

import pytest

from loop_ros.workers.priority import autogroup_nice

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

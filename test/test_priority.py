"""Lowering a node's CPU priority: its threads' nice, and its session's autogroup when it leads it."""
import os
import subprocess
import sys

import pytest

CHILD = """
import os
from loop_ros.nodes import lower_process_priority
lower_process_priority(7)
autogroup = open("/proc/self/autogroup").read().split()[-1]
print(os.getpriority(os.PRIO_PROCESS, 0), autogroup)
"""


def run_child(new_session: bool) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=30,
                         start_new_session=new_session, check=True).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="kernel without autogroup scheduling")
def test_a_session_leader_nices_its_threads_and_its_autogroup():
    with open("/proc/self/autogroup") as f:
        ours = int(f.read().split()[-1])
    assert run_child(new_session=True) == (os.getpriority(os.PRIO_PROCESS, 0) + 7, 7)  # a new session: its autogroup starts at 0
    # A process inside another session (as under a launch file) leaves the shared autogroup alone.
    assert run_child(new_session=False) == (os.getpriority(os.PRIO_PROCESS, 0) + 7, ours)

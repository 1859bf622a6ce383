"""Child processes that go when the process that started them goes.

A `kill` of `sof-eval --workers 2` (SIGTERM to the parent only; Ctrl-C reaches the whole process
group, a kill does not) left its pool workers running: they went on appending episodes to the work
directory that a restarted run appends the same episodes to. Linux only (PR_SET_PDEATHSIG); elsewhere
nothing changes."""
from __future__ import annotations

import os
import signal
import sys


def parent_death_signal(sig: int) -> bool:
    """Have the kernel send `sig` to this process when its parent dies. False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(1, int(sig)) == 0  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def worker_dies_with(parent_pid: int) -> None:
    """Pool initializer: SIGTERM this worker when `parent_pid` (the pool's owner) dies; exit now if it
    died before the death signal was set."""
    if parent_death_signal(signal.SIGTERM) and os.getppid() != parent_pid:
        os._exit(1)

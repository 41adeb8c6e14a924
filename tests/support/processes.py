"""Whether a process still runs, for tests that check a server or worker was stopped."""
from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while a process with ``pid`` exists (signal 0 probes it without touching it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

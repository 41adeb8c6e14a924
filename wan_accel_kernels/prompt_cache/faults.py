"""One warning per I/O fault cause of a cache folder: a full disk must not log once per prompt.

A cause is (folder, what failed, errno). The first occurrence is a warning naming the folder, the error and the fix;
repeats go to the debug log. The cache itself carries on as misses.
"""
from __future__ import annotations

import errno
import logging
import threading
from pathlib import Path

log = logging.getLogger("wan_accel")

_FIXES = {
    errno.ENOSPC: "free disk space or lower the cache limit",
    errno.EDQUOT: "free space within your quota or lower the cache limit",
    errno.EROFS: "point the cache at a writable folder",
    errno.EACCES: "make the folder readable and writable for this user",
    errno.EPERM: "make the folder readable and writable for this user",
}
_warned: set[tuple[str, str, int | None]] = set()
_lock = threading.Lock()


def cache_fault(directory: Path, operation: str, error: OSError) -> None:
    """Logs that ``operation`` failed in the cache ``directory``: a warning the first time for this cause."""
    cause = (str(directory), operation, error.errno)
    with _lock:
        first = cause not in _warned
        _warned.add(cause)
    if not first:
        log.debug("wan-accel: cache folder %s: cannot %s (%s); again", directory, operation, error)
        return
    fix = _FIXES.get(error.errno, "check the folder and its disk")
    log.warning("wan-accel: cache folder %s: cannot %s (%s: %s); the cache treats this as a miss and carries on. "
                "Fix: %s. Logged once per cause.", directory, operation, type(error).__name__, error, fix)

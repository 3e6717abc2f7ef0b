"""One acting process per state dir: an flock the kernel drops when its holder dies."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "daemon.lock"


def acquire_state_lock(state_dir: Path) -> int | None:
    """Hold an exclusive flock on the state dir: one acting daemon per state dir.

    The kernel drops the lock when the process dies (even by SIGKILL), so a
    crashed daemon never blocks its successor. Returns the fd, or None if held.
    """
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def lock_holder(state_dir: Path) -> str:
    """The PID the lock file names (its holder, while it is held)."""
    try:
        return (state_dir / LOCK_FILE).read_text().strip()
    except OSError:
        return "?"


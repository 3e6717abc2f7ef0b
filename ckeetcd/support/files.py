"""Files written so that a crash never leaves half of one: atomic, fsynced, private.

Every secret is 0600 from its first byte; a folder that already exists is never
chmod-ed (it may be shared: a backup target, /etc/kubernetes, a mount point).
"""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600 from its first byte."""
    write_atomic(path, data, 0o600)


def _staged(folder: Path, name: str, data: bytes, mode: int) -> str:
    """A fsynced temp file with `data` and `mode` in `folder`; returns its path."""
    import tempfile  # with random and hashlib: off the path of commands that only read

    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
    ensure_private_dir(path.parent)
    tmp = _staged(path.parent, path.name, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_new(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file that must not exist yet, atomically: FileExistsError (and nothing
    changed) when it does. For the CA, which must never be overwritten."""
    ensure_private_dir(path.parent)
    tmp = _staged(path.parent, path.name, data, mode)
    try:
        os.link(tmp, path)  # fails if `path` exists, unlike a rename
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (fsync the folder itself)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> None:
    """Create `path` and its missing parents with mode 0700; leave existing folders alone.

    A folder that exists may be shared (a backup target, /etc/kubernetes, a
    mount point): its mode is its owner's business, so it is never chmod-ed.
    """
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: not ours to chmod
        d.chmod(0o700)  # mkdir's mode went through the umask

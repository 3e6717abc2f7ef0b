"""Snapshots: stream from a member to a file, fsync, verify, rotate.

etcd appends the SHA-256 of the database to the snapshot stream; checking it
here is the same integrity check `etcdutl snapshot status` relies on, without
spawning a process. A file that fails the check is deleted, never kept.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ckeetcd.etcd.client import EtcdClient
from ckeetcd.support.files import ensure_private_dir

HASH_LEN = hashlib.sha256().digest_size


class SnapshotError(Exception):
    pass


def verify(path: Path) -> None:
    """Raise SnapshotError unless the file ends with the SHA-256 of what precedes it."""
    size = path.stat().st_size
    if size <= HASH_LEN:
        raise SnapshotError(f"{path}: too short to be an etcd snapshot ({size} bytes)")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = size - HASH_LEN
        while remaining:
            chunk = f.read(min(1 << 20, remaining))
            if not chunk:
                raise SnapshotError(f"{path}: truncated")
            h.update(chunk)
            remaining -= len(chunk)
        trailer = f.read(HASH_LEN)
    if h.digest() != trailer:
        raise SnapshotError(f"{path}: integrity check failed (sha256 mismatch)")


async def save(client: EtcdClient, path: Path) -> int:
    """Stream a snapshot to `path` (0600) atomically; return its size."""
    ensure_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in client.snapshot():
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        verify(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def rotate(folder: Path, pattern: str, keep: int) -> list[Path]:
    """Delete the oldest files matching `pattern` beyond `keep`; return them."""
    files = sorted(folder.glob(pattern))
    doomed = files[: max(0, len(files) - keep)]
    for p in doomed:
        p.unlink()
    return doomed

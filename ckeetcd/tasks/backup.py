"""Local backups: `etcd-YYYYMMDD-hhmmss.backup` (UTC) snapshots in a folder, kept N deep.

A backup counts only once it is complete, on disk and verified:

1. the Snapshot RPC stream is written to a hidden `.NAME.part` in the target
   folder (0600), SHA-256-hashed as it arrives; etcd appends the SHA-256 of the
   database as the stream's last 32 bytes, and the file keeps them, so
   `etcdutl snapshot status/restore` check the same hash later;
2. the file is fsynced, its hash compared with the trailer, its size checked
   (a whole number of 512-byte sectors plus the trailer, etcd's own test);
3. only then is it linked to its final name (never replacing a file there)
   and the folder fsynced. A failed check deletes the part file: a bad backup
   is never left to be found.

Rotation keeps the newest N files that match the name pattern exactly (the
names sort by time) and never touches anything else in the folder.

`ScheduledBackups` is the daemon's side task: a backup every `[backup]
interval` seconds (counted from the newest backup in the folder, whoever
made it, so restarts neither skip nor repeat one), from a healthy voter, only
while the cluster has quorum.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckeetcd.core.config import Config
from ckeetcd.core.model import Desired, Observed
from ckeetcd.etcd.client import EtcdClient
from ckeetcd.support.files import ensure_private_dir, fsync_dir

NAME_FORMAT = "etcd-%Y%m%d-%H%M%S.backup"
# fullmatch, ASCII digits: "etcd-...backup\n" or full-width digits are not our files.
NAME_RE = re.compile(r"etcd-([0-9]{8}-[0-9]{6})\.backup")
HASH_LEN = 32
SECTOR = 512
WRITE_BATCH = 1 << 20  # bytes handed to the writer thread at a time
STALE_PART = 3600.0  # a part file older than this is a crashed backup's leftover


class BackupError(Exception):
    """The backup could not be made; nothing was kept."""


def default_dir(config: Config) -> Path:
    return config.backup.dir or (config.cluster.state_dir / "backups")


def backup_name(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).strftime(NAME_FORMAT)


def backup_time(path: Path) -> dt.datetime | None:
    """The UTC time in a backup's name, or None when the name is not one of ours."""
    m = NAME_RE.fullmatch(path.name)
    if m is None:
        return None
    return dt.datetime.strptime(m.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=dt.timezone.utc)


def list_backups(folder: Path) -> list[Path]:
    """Our backups in `folder`, oldest first (the names sort by time)."""
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    return sorted(p for p in entries if NAME_RE.fullmatch(p.name) and p.is_file())


def check_folder(folder: Path) -> str:
    """Why backups cannot be written into `folder` ("" when they can).

    Probes by creating (and removing) a file, so read-only mounts, ACLs and
    immutable folders are caught as well as modes, even for root.
    """
    if not folder.exists():
        return f"{folder}: no such directory"
    if not folder.is_dir():
        return f"{folder}: not a directory"
    probe = folder / f".ckeetcd-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        return f"{folder}: not writable: {e.strerror or e}"
    os.close(fd)
    probe.unlink()
    return ""


class _HashingFile:
    """Writes bytes to a file and hashes all but the last 32 (etcd's trailer)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sha = hashlib.sha256()
        self.tail = b""
        self.size = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(data)
        if len(data) >= HASH_LEN:
            self.sha.update(self.tail)
            self.sha.update(memoryview(data)[:-HASH_LEN])
            self.tail = bytes(data[-HASH_LEN:])
            return
        joined = self.tail + data
        cut = max(0, len(joined) - HASH_LEN)
        self.sha.update(joined[:cut])
        self.tail = joined[cut:]

    def check(self, where: str) -> None:
        if self.size <= HASH_LEN or self.size % SECTOR != HASH_LEN:
            raise BackupError(f"{where}: incomplete snapshot ({self.size} bytes; an etcd "
                              f"snapshot is whole {SECTOR}-byte sectors plus a "
                              f"{HASH_LEN}-byte hash)")
        if self.sha.digest() != self.tail:
            raise BackupError(f"{where}: integrity check failed (SHA-256 mismatch)")


async def save_verified(client: EtcdClient, path: Path, timeout: float = 600.0) -> int:
    """Stream a snapshot into `path`: fsynced and verified, or nothing; return its size.

    Writing and hashing run in a worker thread, one batch behind the stream,
    so receiving never waits for the disk unless the disk is the bottleneck.
    """
    tmp = path.with_name(f".{path.name}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    sink = _HashingFile(fd)
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[None] | None = None
    try:
        try:
            batch: list[bytes] = []
            size = 0
            async for chunk in client.snapshot(timeout=timeout):
                batch.append(chunk)
                size += len(chunk)
                if size >= WRITE_BATCH:
                    if pending is not None:
                        await pending
                    pending = loop.run_in_executor(None, sink.write, b"".join(batch))
                    batch, size = [], 0
            if pending is not None:
                await pending
                pending = None
            if batch:
                await loop.run_in_executor(None, sink.write, b"".join(batch))
            await loop.run_in_executor(None, os.fsync, fd)
        finally:
            if pending is not None:
                with contextlib.suppress(BaseException):
                    await pending
            os.close(fd)
        sink.check(f"snapshot from {client.endpoint}")
        os.link(tmp, path)  # unlike rename, never replaces an existing backup
        tmp.unlink()
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sink.size


def rotate(folder: Path, keep: int) -> list[Path]:
    """Delete our oldest backups beyond `keep`; return them. Leaves other files alone."""
    backups = list_backups(folder)
    doomed = backups[: max(0, len(backups) - keep)]
    for p in doomed:
        p.unlink(missing_ok=True)
    now = time.time()
    for p in folder.glob(".etcd-*.backup.part"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > STALE_PART:
                p.unlink()
                doomed.append(p)
    if doomed:
        fsync_dir(folder)
    return doomed


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    duration: float
    removed: tuple[Path, ...]
    source: str


async def take_backup(client: EtcdClient, folder: Path, keep: int,
                      clock: Any = None) -> BackupResult:
    """Snapshot into `folder` under a fresh UTC-stamped name, verify, then rotate to `keep`.

    Names have one-second resolution: when the name is taken (two backups in
    one second), wait for the next second rather than overwrite a backup.
    """
    now = clock or (lambda: dt.datetime.now(dt.timezone.utc))
    start = time.monotonic()
    path = folder / backup_name(now())
    for _ in range(30):
        if not path.exists():
            break
        await asyncio.sleep(1.0 - (now().microsecond / 1e6) + 0.001)
        path = folder / backup_name(now())
    else:
        raise BackupError(f"{path}: exists")
    try:
        size = await save_verified(client, path)
    except FileExistsError as e:  # a concurrent backup took the same second's name
        raise BackupError(f"{path}: taken by another backup made in the same second") from e
    removed = rotate(folder, keep)
    return BackupResult(path=path, size=size, duration=round(time.monotonic() - start, 4),
                        removed=tuple(removed), source=client.endpoint)


# ---- the daemon's scheduled backups ------------------------------------------------


class ScheduledBackups:
    """Side task: a verified backup every `[backup] interval` seconds, keeping `max_backups`.

    Follows reloaded configs (interval 0 pauses it). Never blocks the loop: it
    only reads the latest observation and takes no lock; a failed backup is
    logged and retried after `min(interval, 60 s)`.
    """

    name = "scheduled-backups"

    def __init__(self, config: Config, pool: Any, log: Any) -> None:
        self.config = config
        self.pool = pool
        self.log = log
        self.observed: Observed | None = None
        self._changed = asyncio.Event()
        self._retry_at = 0.0

    def offer(self, config: Config, desired: Desired, observed: Observed) -> None:
        if config.backup != self.config.backup or (
            self.observed is not None and observed.has_quorum() != self.observed.has_quorum()
        ) or self.observed is None:
            self._changed.set()
        self.config = config
        self.observed = observed

    def due_in(self, now: float) -> float | None:
        """Seconds until the next backup is due (<= 0: now); None when turned off."""
        interval = self.config.backup.interval
        if interval <= 0:
            return None
        stamps = [t for t in map(backup_time, list_backups(default_dir(self.config))) if t]
        due = stamps[-1].timestamp() + interval if stamps else now
        return max(due, self._retry_at) - now

    def source(self) -> str | None:
        """A healthy voter's client URL, followers first (spare the leader), or None."""
        obs = self.observed
        if obs is None or not obs.has_quorum():
            return None
        leader = obs.leader_id()
        voters = sorted((m for m in obs.healthy_voters() if m.client_urls),
                        key=lambda m: m.id == leader)
        return voters[0].client_urls[0] if voters else None

    async def _wait(self, seconds: float | None) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)

    async def run(self) -> None:
        while True:
            wait = self.due_in(time.time())
            if wait is None or wait > 0:
                await self._wait(wait)
                continue
            url = self.source()
            if url is None:
                await self._wait(None)  # woken when quorum (or the config) changes
                continue
            await self.backup_once(url)

    async def backup_once(self, url: str) -> BackupResult | None:
        folder = default_dir(self.config)
        try:
            ensure_private_dir(folder)  # 0700 when made here; an existing one is left as is
            # Its own channel: a long stream must not hold up the observer's probes,
            # which share the pool's channel to this member.
            async with EtcdClient(url, self.pool.tls, timeout=self.pool.timeout) as client:
                result = await take_backup(client, folder, self.config.backup.max_backups)
        except Exception as e:
            self._retry_at = time.time() + min(self.config.backup.interval, 60.0)
            self.log.warning("backup_failed", op="scheduled-backup", outcome="error",
                             source=url, error=f"{type(e).__name__}: {e}")
            return None
        self._retry_at = 0.0
        self.log.info("backup_created", op="scheduled-backup", outcome="ok",
                      path=str(result.path), size=result.size, duration=result.duration,
                      source=result.source)
        for p in result.removed:
            self.log.info("backup_removed", op="scheduled-backup", outcome="ok", path=str(p))
        return result

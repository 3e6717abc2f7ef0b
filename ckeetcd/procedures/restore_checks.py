"""What `ckeetcd restore` checks before it changes anything: the file and the cluster.

A snapshot is refused (`RestoreRefused`) unless it is a regular, readable
file that etcd can restore: with etcd's SHA-256 trailer (the Snapshot RPC,
`etcdctl snapshot save` and `local-backup` write one) the hash must match; a
bare database copied from a data dir (no trailer) must at least have a valid
bbolt meta page and be as long as that page says; either way `etcdutl
snapshot status` must read it. `probe_cluster` tells whether quorum holds,
as `ckeetcd status` computes it (a restore needs it lost, unless forced).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ckeetcd.core.config import Config
from ckeetcd.core.model import Health, Observed, quorum
from ckeetcd.etcd.client import EtcdClient, EtcdError, PemTLS
from ckeetcd.etcd.snapshot import HASH_LEN, SnapshotError, verify

SECTOR = 512
BOLT_MAGIC = 0xED0CDAED
# bbolt meta: magic version pageSize flags | root seq | freelist | pgid | txid | checksum
_META = struct.Struct("<IIII QQ Q Q Q Q")


class RestoreRefused(Exception):
    """The restore will not run; nothing was changed."""


# ---- the snapshot ------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotInfo:
    path: Path
    size: int
    hashed: bool  # carries etcd's SHA-256 trailer (checked); False: a bare bbolt file
    identity: tuple[int, ...] = ()  # device, inode, size, mtime when checked
    revision: int = 0
    total_keys: int = 0
    total_size: int = 0
    hash: int = 0

    def describe(self) -> str:
        check = "SHA-256 verified" if self.hashed else \
            "NO integrity hash (a database file copied from a data dir)"
        return (f"{self.path} ({self.size} bytes, revision {self.revision}, "
                f"{self.total_keys} keys; {check})")


def _fnv64a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _meta(head: bytes, offset: int) -> tuple[int, int, int] | None:
    """(page size, high-water page id, txid) of a valid bbolt meta page at `offset`."""
    raw = head[offset + 16: offset + 16 + _META.size]  # after the 16-byte page header
    if len(raw) < _META.size:
        return None
    magic, _ver, psize, _flags, _root, _seq, _free, pgid, txid, checksum = _META.unpack(raw)
    if magic != BOLT_MAGIC or checksum != _fnv64a(raw[:-8]) or psize < SECTOR:
        return None
    return psize, pgid, txid


def bolt_min_size(head: bytes) -> int:
    """The length a bbolt file must have, per its newest valid meta page; ValueError if none.

    `head` is the start of the file (at least two pages). Meta pages 0 and 1
    each carry a checksum; the one with the higher txid is current, and its
    high-water mark (pgid) times the page size is the file's minimum length.
    """
    first = _meta(head, 0)
    metas = [m for m in (first, _meta(head, first[0] if first else 4096)) if m]
    if not metas:
        raise ValueError("no valid bbolt meta page (not an etcd database)")
    psize, pgid, _ = max(metas, key=lambda m: m[2])
    return pgid * psize


def _check_structure(path: Path, size: int) -> bool:
    """Cheap checks of the file's shape; True when it carries etcd's SHA-256 trailer."""
    if size == 0:
        raise RestoreRefused(f"{path}: empty file")
    hashed = size % SECTOR == HASH_LEN
    if not hashed and size % SECTOR != 0:
        raise RestoreRefused(
            f"{path}: truncated or not a snapshot: {size} bytes is not whole {SECTOR}-byte "
            f"sectors (plus etcd's {HASH_LEN}-byte SHA-256 trailer)")
    with open(path, "rb") as f:
        head = f.read(2 * 65536)
    try:
        need = bolt_min_size(head)
    except ValueError as e:
        raise RestoreRefused(f"{path}: {e}") from None
    if size - (HASH_LEN if hashed else 0) < need:
        raise RestoreRefused(f"{path}: truncated: the database needs {need} bytes, the file "
                             f"has {size - (HASH_LEN if hashed else 0)}")
    return hashed


def _check_hash(path: Path) -> None:
    try:
        verify(path)
    except SnapshotError as e:
        raise RestoreRefused(f"{e}: the file is corrupted or truncated") from None


async def _etcdutl_status(path: Path, etcdutl: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        etcdutl, "snapshot", "status", "-w", "json", str(path),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise RestoreRefused(f"{path}: etcdutl snapshot status failed: "
                             f"{lines[-1] if lines else f'exit {proc.returncode}'}")
    try:
        status: dict[str, Any] = json.loads(out)
    except ValueError:
        raise RestoreRefused(f"{path}: etcdutl snapshot status: unreadable answer") from None
    return status


def file_identity(path: Path) -> tuple[int, ...]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


async def check_snapshot(path: Path, etcdutl: str) -> SnapshotInfo:
    """Refuse a missing, unreadable, truncated or corrupted snapshot; describe a good one.

    The SHA-256 check (a thread) and `etcdutl snapshot status` (a process)
    run at once; the hash's verdict is reported first when both object.
    """
    try:
        st = path.stat()
        identity = file_identity(path)
    except FileNotFoundError:
        raise RestoreRefused(f"{path}: no such file") from None
    except OSError as e:
        raise RestoreRefused(f"{path}: {e.strerror or e}") from None
    if not path.is_file():
        raise RestoreRefused(f"{path}: not a regular file")
    try:
        hashed = _check_structure(path, st.st_size)
        checks = await asyncio.gather(
            asyncio.to_thread(_check_hash, path) if hashed else asyncio.sleep(0),
            _etcdutl_status(path, etcdutl), return_exceptions=True)
    except OSError as e:
        raise RestoreRefused(f"{path}: cannot read: {e.strerror or e}") from None
    for outcome in checks:
        if isinstance(outcome, OSError):
            raise RestoreRefused(f"{path}: cannot read: {outcome.strerror or outcome}")
        if isinstance(outcome, BaseException):
            raise outcome
    status = checks[1]
    assert isinstance(status, dict)
    return SnapshotInfo(path=path, size=st.st_size, hashed=hashed, identity=identity,
                        revision=int(status.get("revision", 0)),
                        total_keys=int(status.get("totalKey", 0)),
                        total_size=int(status.get("totalSize", 0)),
                        hash=int(status.get("hash", 0)))



def inside_data_dirs(snapshot: Path, state_dir: Path) -> bool:
    """Whether `snapshot` lies in a member data dir (which the restore moves away)."""
    members = (state_dir / "members").resolve()
    try:
        rel = snapshot.resolve().relative_to(members)
    except ValueError:
        return False
    return len(rel.parts) > 1 and rel.parts[1] == "data"



# ---- the cluster -------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterState:
    observed: Observed
    answering: tuple[str, ...]  # desired members whose Status RPC answered
    highest_revision: int = 0  # the highest store revision any of them answered with

    @property
    def has_quorum(self) -> bool:
        return self.observed.has_quorum()

    def describe(self) -> str:
        obs = self.observed
        if obs.members is None:
            return "no member answers"
        voters, healthy = len(obs.voters()), len(obs.healthy_voters())
        return (f"{healthy} of {voters} voters healthy (quorum needs {quorum(voters)}); "
                f"answering: {', '.join(self.answering) or 'none'}")


async def probe_cluster(config: Config, tls: PemTLS) -> ClusterState:
    """Status of every desired member at once, plus a member list: does quorum hold?"""
    timeout = config.daemon.rpc_timeout
    clients = {m.name: EtcdClient(config.client_url(m), tls, timeout=timeout)
               for m in config.members}
    try:
        async def status(c: EtcdClient) -> Health:
            try:
                return await c.status(timeout=timeout)
            except EtcdError as e:
                return Health(healthy=False, error=f"{e.code}: {e.details}")

        healths = dict(zip(clients, await asyncio.gather(*(status(c) for c in
                                                           clients.values())), strict=True))
        members = None
        for name, h in sorted(healths.items(), key=lambda kv: not kv[1].healthy):
            if h.member_id:
                with contextlib.suppress(EtcdError):
                    members = await clients[name].member_list()
                    break
        by_id = {h.member_id: h for h in healths.values() if h.member_id}
        health = {m.id: by_id.get(m.id, Health(healthy=False, error="no answer"))
                  for m in members or ()}
        observed = Observed(members=members, health=MappingProxyType(health))
        return ClusterState(observed, tuple(n for n, h in healths.items() if h.member_id),
                            max((h.revision for h in healths.values()), default=0))
    finally:
        for c in clients.values():
            await c.close()


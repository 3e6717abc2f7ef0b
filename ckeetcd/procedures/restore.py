"""Rebuild the cluster from a snapshot: after quorum loss, or when the data is unusable.

Checks first, and refuses (`RestoreRefused`, nothing changed) when any fails:

- the snapshot: a regular, readable file; with etcd's SHA-256 trailer (what
  the Snapshot RPC, `etcdctl snapshot save` and `local-backup` write) the
  hash must match; a bare database copied from a data dir (no trailer) must
  at least have a valid bbolt meta page and be as long as that page says;
  either way `etcdutl snapshot status` must read it;
- the cluster: it must have lost quorum (status of every desired member, as
  `ckeetcd status` computes it), unless forced.

Then, in order, each step logged as an `op_step` event of op `restore-cluster`
and recorded in the history:

0. mark-restoring: a `RESTORING` marker (who, since when, which file) in every
   member dir, on every node: any daemon that sees one keeps its hands off
   (phase "restoring"), so a daemon left running on another node cannot
   restart a member mid-restore or bootstrap an empty cluster;
1. stop-members: stop every member process, found by pidfile (only ours),
   desired or not;
2. archive-data: move every member's data dir aside to
   `data.before-restore-STAMP` (never deleted: the operator decides);
3. install-tls: member certificates that are missing or wrong are re-issued;
4. restore-data: `etcdutl snapshot restore` into a fresh data dir per desired
   member, with a new initial cluster of the desired members (etcd derives
   member IDs from peer URLs and the token, so unchanged members keep theirs).
   etcdutl is told to skip its own hash check: the hash was verified once
   above, and the file must still be the one checked (device, inode, size,
   mtime), so it is not hashed again once per member;
5. start-members: the runtime's usual flags (`--initial-cluster-state=new`:
   the restored data dir already holds the membership, etcd reads it);
6. wait-healthy: every desired member a healthy voter under one leader;
7. ensure-rbac: the snapshot carries the auth state; root, kube-apiserver and
   `[[users]]` are checked and repaired, auth is on;
8. unmark-restoring: the markers go; the daemons carry on.

The caller (`ckeetcd restore`) holds the state-dir lock throughout, so the
daemon of this node cannot run beside it. A failure after step 0 raises
`RestoreFailed` and leaves the markers: re-running the restore is safe (it
moves half-restored data aside too).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ckeetcd.core.config import Config
from ckeetcd.core.model import Desired, Health, Observed, quorum
from ckeetcd.etcd.client import EtcdClient, EtcdError, PemTLS
from ckeetcd.etcd.rbac import ensure_rbac, rbac_in_place
from ckeetcd.etcd.snapshot import HASH_LEN, SnapshotError, verify
from ckeetcd.nodes.base import (
    RESTORE_MARKER,
    MemberRuntime,
    MemberSpec,
    restore_bump,
    restored_start,
)
from ckeetcd.ops.context import FAILPOINT_ENV
from ckeetcd.pki import CA, member_tls_files, member_tls_problem
from ckeetcd.support.history import History

OP = "restore-cluster"
ARCHIVE_LABEL = "before-restore"
HEALTH_POLL = 0.05
SECTOR = 512
BOLT_MAGIC = 0xED0CDAED
# bbolt meta: magic version pageSize flags | root seq | freelist | pgid | txid | checksum
_META = struct.Struct("<IIII QQ Q Q Q Q")


class RestoreRefused(Exception):
    """The restore will not run; nothing was changed."""


class RestoreFailed(Exception):
    """The restore stopped partway; the message says what state things are in."""


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


# ---- the plan ----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    config: Config
    snapshot: SnapshotInfo
    cluster: ClusterState
    local_members: tuple[str, ...]  # every member directory on this node
    running: dict[str, int] = field(default_factory=dict)  # name -> pid
    with_data: tuple[str, ...] = ()
    earlier_start: int = 0  # an interrupted earlier run's restored revisions began here

    @property
    def bump(self) -> int:
        return restore_bump(self.snapshot.revision, self.cluster.highest_revision,
                            self.earlier_start)

    @property
    def desired(self) -> Desired:
        return Desired.from_config(self.config)

    def initial_cluster(self) -> tuple[tuple[str, str], ...]:
        return tuple((d.name, d.peer_url) for d in self.desired.members)

    def describe(self) -> list[str]:
        c = self.config
        names = [m.name for m in c.members]
        initial = ",".join(f"{n}={u}" for n, u in self.initial_cluster())
        stop = ", ".join(f"{n} (pid {p})" for n, p in sorted(self.running.items())) \
            or "none running"
        aside = ", ".join(self.with_data) or "none has data"
        lines = [
            f"restore etcd cluster {c.cluster.name!r} from {self.snapshot.describe()}",
            f"cluster now: {self.cluster.describe()}",
            f"  1. stop the running members: {stop}",
            f"  2. move their data dirs aside to data.{ARCHIVE_LABEL}-STAMP (kept, not "
            f"deleted): {aside}",
            f"  3. restore the snapshot into a fresh data dir for {', '.join(names)}",
            f"     (new cluster: --initial-cluster={initial} "
            f"--initial-cluster-token={c.cluster.name})",
            f"  4. start {', '.join(names)} and wait until all are healthy "
            f"(up to {c.daemon.start_timeout:g}s)",
            "  5. check users, roles and auth (root, kube-apiserver, [[users]]); repair any gap",
            "Keys written after the snapshot was taken are lost. While it runs, each member "
            f"dir holds a {RESTORE_MARKER} marker: daemons on other nodes keep their hands off.",
        ]
        if not self.snapshot.hashed:
            lines.append("WARNING: this file carries no integrity hash: only its structure "
                         "could be checked, not its content")
        return lines


async def make_plan(config: Config, runtime: MemberRuntime, snapshot: SnapshotInfo,
                    cluster: ClusterState) -> Plan:
    names = sorted(set(await runtime.known_members()) | {m.name for m in config.members})
    running: dict[str, int] = {}
    with_data: list[str] = []
    markers: list[str] = []
    for n in names:
        rt = await runtime.inspect(n)
        if rt.running and rt.pid:
            running[n] = rt.pid
        if rt.has_data:
            with_data.append(n)
        markers.append(rt.restoring)
    return Plan(config, snapshot, cluster, tuple(names), running, tuple(with_data),
                restored_start(markers))


def inside_data_dirs(snapshot: Path, state_dir: Path) -> bool:
    """Whether `snapshot` lies in a member data dir (which the restore moves away)."""
    members = (state_dir / "members").resolve()
    try:
        rel = snapshot.resolve().relative_to(members)
    except ValueError:
        return False
    return len(rel.parts) > 1 and rel.parts[1] == "data"


# ---- doing it ----------------------------------------------------------------------


@dataclass
class Restorer:
    """Carries out a Plan; `say` prints progress for the operator."""

    plan: Plan
    runtime: MemberRuntime
    ca: CA
    tls: PemTLS
    log: Any
    say: Callable[[str], None]
    history: History | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def step(self, name: str, **extra: Any) -> AsyncIterator[None]:
        start = time.monotonic()
        outcome, error = "ok", ""
        try:
            yield
        except BaseException as e:
            outcome, error = "error", f"{type(e).__name__}: {e}"
            raise
        finally:
            duration = round(time.monotonic() - start, 4)
            self.timings[name] = duration
            fields = {"op": OP, "step": name, "outcome": outcome, "duration": duration,
                      **({"error": error} if error else {}), **extra}
            (self.log.warning if error else self.log.info)("op_step", **fields)
            if self.history is not None:
                self.history.record(event="step-end", targets=",".join(self.plan.local_members),
                                    **fields)
            if os.environ.get(FAILPOINT_ENV, "") == f"{OP}:{name}":  # tests: die right here
                self.log.warning("failpoint", op=OP, step=name)
                os.kill(os.getpid(), signal.SIGKILL)

    async def run(self) -> None:
        try:
            await self._rebuild(self.plan.desired)
        except RestoreFailed:
            raise
        except Exception as e:
            raise RestoreFailed(
                f"{type(e).__name__}: {e}. The data from before the restore is kept in "
                f"data.{ARCHIVE_LABEL}-* in each member dir; the members stay marked "
                f"{RESTORE_MARKER}, so no daemon touches them: fix the cause and run the restore "
                "again (it moves any half-restored data aside too)") from e

    def marker_note(self) -> str:
        """Who is restoring, for the cycle lines of the other daemons."""
        since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        start = self.plan.snapshot.revision + self.plan.bump
        return (f"ckeetcd restore, pid {os.getpid()} on {socket.gethostname()}, since {since}, "
                f"from {self.plan.snapshot.path.name}; restored revisions start at {start}")

    async def _rebuild(self, desired: Desired) -> None:
        plan = self.plan
        marked = sorted(set(plan.local_members) | {d.name for d in desired.members})
        async with self.step("mark-restoring"):
            note = self.marker_note()
            for name in marked:
                await self.runtime.mark_restoring(name, note)
        async with self.step("stop-members"):
            for name in plan.local_members:
                if await self.runtime.stop(name):
                    self.say(f"stopped {name}")
        async with self.step("archive-data"):
            for name in plan.local_members:
                moved = await self.runtime.archive_data(name, ARCHIVE_LABEL)
                if moved is not None:
                    self.say(f"moved the data of {name} aside to {moved}")
        async with self.step("install-tls"):
            await self._ensure_tls(desired)
        specs = [MemberSpec(name=d.name, client_url=d.client_url, peer_url=d.peer_url,
                            cluster_token=desired.cluster_name,
                            initial_cluster=plan.initial_cluster(), initial_state="new")
                 for d in desired.members]
        async with self.step("restore-data", snapshot=str(plan.snapshot.path)):
            # Checked once already (the hash, when there is one): etcdutl need not hash the
            # same file once per member again, as long as it is still that file.
            if file_identity(plan.snapshot.path) != plan.snapshot.identity:
                raise RestoreFailed(f"{plan.snapshot.path} changed since it was checked")
            bump = plan.bump
            outcomes = await asyncio.gather(*(
                self.runtime.restore_data(s.name, plan.snapshot.path, s, skip_hash_check=True,
                                          bump=bump)
                for s in specs), return_exceptions=True)  # let every etcdutl finish
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            self.say(f"restored the snapshot for {', '.join(s.name for s in specs)}")
        async with self.step("start-members"):
            for s in specs:
                pid = await self.runtime.start(s)
                self.say(f"started {s.name} (pid {pid})")
        async with self.step("wait-healthy"):
            leader = await self._wait_healthy(desired, plan.config.daemon.start_timeout)
            self.say(f"cluster healthy: {len(desired.members)} voters, leader {leader}")
        async with self.step("ensure-rbac"):
            changes = await self._rbac(desired, leader)
            self.say("users, roles and auth: " + (", ".join(changes) if changes else
                                                  "as restored (no change)"))
        async with self.step("unmark-restoring"):
            for name in marked:
                await self.runtime.mark_restoring(name, None)

    async def _ensure_tls(self, desired: Desired) -> None:
        cfg = self.plan.config
        now = dt.datetime.now(dt.timezone.utc)
        for d in desired.members:
            files = {f: await self.runtime.read_tls(d.name, f)
                     for f in ("ca.crt", "server.crt", "peer.crt")}
            problem = member_tls_problem(files, self.ca.cert_pem, d.address, desired.member_dns,
                                         cfg.tls.member_cert_renew_before, now)
            if problem:
                await self.runtime.install_tls(d.name, member_tls_files(
                    self.ca, d.name, d.address, cfg.tls.member_cert_lifetime,
                    desired.member_dns))
                self.say(f"issued member certificates for {d.name} ({problem})")

    async def _wait_healthy(self, desired: Desired, timeout: float) -> str:
        """Poll until every desired member is a healthy voter under one leader; its URL.

        Fresh channels every round: a channel to a member that is not listening
        yet backs off its reconnects (up to a second), which would only add delay.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            clients = {d.client_url: EtcdClient(d.client_url, self.tls, timeout=1.0)
                       for d in desired.members}
            try:
                last, leader = await self._health_round(desired, clients)
            finally:
                for c in clients.values():
                    await c.close()
            if leader:
                return leader
            if loop.time() > deadline:
                raise RestoreFailed(f"members not healthy after {timeout:g}s: {last}")
            await asyncio.sleep(HEALTH_POLL)

    async def _health_round(self, desired: Desired,
                            clients: dict[str, EtcdClient]) -> tuple[str, str]:
        async def one(c: EtcdClient) -> Health:
            try:
                return await c.status(timeout=1.0)
            except EtcdError as e:
                return Health(healthy=False, error=f"{e.code}: {e.details}")

        healths = dict(zip(clients, await asyncio.gather(*(one(c) for c in clients.values())),
                           strict=True))
        bad = [f"{u}: {h.error or 'unhealthy'}" for u, h in healths.items() if not h.healthy]
        if bad:
            return "; ".join(bad), ""
        leaders = {h.leader_id for h in healths.values()}
        if len(leaders) != 1:
            return "members disagree on the leader", ""
        members = await next(iter(clients.values())).member_list()
        want = {d.peer_url for d in desired.members}
        have = {m.peer_url for m in members if not m.learner}
        if have != want or len(members) != len(want):
            return f"member list {sorted(m.peer_url for m in members)}", ""
        leader_id = leaders.pop()
        url = next(u for u, h in healths.items() if h.member_id == leader_id)
        return "", url

    async def _rbac(self, desired: Desired, leader_url: str) -> list[str]:
        async with EtcdClient(leader_url, self.tls, timeout=5.0) as client:
            changes = await ensure_rbac(client, desired)
            if not await rbac_in_place(client, desired):
                raise RestoreFailed("users, roles or auth still differ after ensure-rbac")
            return changes


# ---- the daemon's side of it -------------------------------------------------------


class QuorumWatch:
    """Side task: log `quorum_lost` when a formed cluster loses quorum, `quorum_restored` after.

    The decision ladder already refuses everything but restarts of stopped
    members that still have data (phase "no-quorum"), so the daemon does not
    thrash; this makes the state loud once, on the transition, with what the
    operator can do about it. `ckeetcd status --output json` shows `"quorum"`.
    """

    name = "quorum-watch"

    def __init__(self, log: Any) -> None:
        self.log = log
        self.had: bool | None = None

    def offer(self, config: Config, desired: Desired, observed: Observed) -> None:
        if not observed.formed:
            return  # bootstrapping: no quorum yet is expected
        has = observed.has_quorum()
        if has == self.had:
            return
        voters, healthy = len(observed.voters()), len(observed.healthy_voters())
        if not has:
            self.log.error(
                "quorum_lost", healthy_voters=healthy, voters=voters,
                reachable=observed.members is not None,
                stopped_with_data=sorted(n for n, r in observed.runtimes.items()
                                         if r.reachable and not r.running and r.has_data),
                action="waiting: only stopped members that still have data are restarted",
                hint="if members lost their data: stop the daemon, then "
                     "`ckeetcd restore --from BACKUP`")
        elif self.had is False:
            self.log.info("quorum_restored", healthy_voters=healthy, voters=voters)
        self.had = has

    async def run(self) -> None:
        await asyncio.Event().wait()  # all the work is in offer()

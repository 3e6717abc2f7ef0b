"""Rebuild the cluster from a snapshot: after quorum loss, or when the data is unusable.

Checks first (ckeetcd.procedures.restore_checks), and refuses (`RestoreRefused`,
nothing changed) when the snapshot is not one etcd can restore, or when the
cluster still has quorum, unless forced. Then the plan (what will be done,
for the operator to confirm) and, in order, these steps, each logged as an
`op_step` event of op `restore-cluster` and recorded in the history by the
ops' step recorder (ckeetcd.ops.steps):

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
import datetime as dt
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ckeetcd.core.config import Config
from ckeetcd.core.model import Desired, Health
from ckeetcd.core.peercn import PEER_CN
from ckeetcd.etcd.client import EtcdClient, EtcdError, PemTLS
from ckeetcd.etcd.rbac import ensure_rbac, rbac_in_place
from ckeetcd.nodes.base import (
    RESTORE_MARKER,
    MemberRuntime,
    MemberSpec,
    restore_bump,
    restored_start,
)
from ckeetcd.ops.steps import StepRecorder
from ckeetcd.pki import CA, PEER_CA_CERT, member_tls_files, member_tls_problem
from ckeetcd.procedures.restore_checks import ClusterState, SnapshotInfo, file_identity
from ckeetcd.support.history import History
from ckeetcd.support.polling import Backoff, Poll, retry

OP = "restore-cluster"
ARCHIVE_LABEL = "before-restore"
HEALTH_POLL = 0.05


class RestoreFailed(Exception):
    """The restore stopped partway; the message says what state things are in."""


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
    steps: StepRecorder = field(init=False)
    peer_ca: CA | None = None  # the cluster's own peer CA; None: one CA

    def __post_init__(self) -> None:
        # the ops' recorder: the same step-begin/step-end records and op_step lines
        self.steps = StepRecorder(self.history, self.log, OP, ",".join(self.plan.local_members))

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
        async with self.steps.step("mark-restoring"):
            note = self.marker_note()
            for name in marked:
                await self.runtime.mark_restoring(name, note)
        async with self.steps.step("stop-members"):
            for name in plan.local_members:
                if await self.runtime.stop(name):
                    self.say(f"stopped {name}")
        async with self.steps.step("archive-data"):
            for name in plan.local_members:
                moved = await self.runtime.archive_data(name, ARCHIVE_LABEL)
                if moved is not None:
                    self.say(f"moved the data of {name} aside to {moved}")
        async with self.steps.step("install-tls"):
            await self._ensure_tls(desired)
        specs = [MemberSpec(name=d.name, client_url=d.client_url, peer_url=d.peer_url,
                            cluster_token=desired.cluster_name,
                            initial_cluster=plan.initial_cluster(), initial_state="new",
                            peer_trust=PEER_CA_CERT if self.peer_ca else "ca.crt",
                            # every member's certificates were ensured just now, each
                            # with the shared CN (ckeetcd.core.peercn)
                            peer_allowed_cn=PEER_CN)
                 for d in desired.members]
        async with self.steps.step("restore-data", snapshot=str(plan.snapshot.path)):
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
        async with self.steps.step("start-members"):
            for s in specs:
                pid = await self.runtime.start(s)
                self.say(f"started {s.name} (pid {pid})")
        async with self.steps.step("wait-healthy"):
            leader = await self._wait_healthy(desired, plan.config.daemon.start_timeout)
            self.say(f"cluster healthy: {len(desired.members)} voters, leader {leader}")
        async with self.steps.step("ensure-rbac"):
            changes = await self._rbac(desired, leader)
            self.say("users, roles and auth: " + (", ".join(changes) if changes else
                                                  "as restored (no change)"))
        async with self.steps.step("unmark-restoring"):
            for name in marked:
                await self.runtime.mark_restoring(name, None)

    async def _ensure_tls(self, desired: Desired) -> None:
        cfg = self.plan.config
        now = dt.datetime.now(dt.timezone.utc)
        for d in desired.members:
            names = ("ca.crt", "server.crt", "peer.crt") + ((PEER_CA_CERT,) if self.peer_ca
                                                            else ())
            files = {f: await self.runtime.read_tls(d.name, f) for f in names}
            problem = member_tls_problem(
                files, self.ca.cert_pem, d.address, desired.member_dns,
                cfg.tls.member_cert_renew_before, now,
                peer_ca_pem=self.peer_ca.cert_pem if self.peer_ca else None)
            if problem:
                await self.runtime.install_tls(d.name, member_tls_files(
                    self.ca, d.name, d.address, cfg.tls.member_cert_lifetime,
                    desired.member_dns, peer_ca=self.peer_ca))
                self.say(f"issued member certificates for {d.name} ({problem})")

    async def _wait_healthy(self, desired: Desired, timeout: float) -> str:
        """Poll until every desired member is a healthy voter under one leader; its URL.

        Fresh channels every round: a channel to a member that is not listening
        yet backs off its reconnects (up to a second), which would only add delay.
        """
        last = ""
        async for _ in Poll(timeout, Backoff(HEALTH_POLL)):
            clients = {d.client_url: EtcdClient(d.client_url, self.tls, timeout=1.0)
                       for d in desired.members}
            try:
                last, leader = await self._health_round(desired, clients)
            finally:
                for c in clients.values():
                    await c.close()
            if leader:
                return leader
        raise RestoreFailed(f"members not healthy after {timeout:g}s: {last}")

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
        """ensure_rbac (idempotent) until it holds. A member that just answered Status can
        still refuse one new connection on a loaded machine ("timed out before receiving
        SETTINGS frame", soak finding 9): unavailable is tried again, on a fresh channel,
        within the start budget; one blip must not fail the whole restore."""
        async def once() -> list[str]:
            async with EtcdClient(leader_url, self.tls, timeout=5.0) as client:
                changes = await ensure_rbac(client, desired)
                if not await rbac_in_place(client, desired):
                    raise RestoreFailed("users, roles or auth still differ after ensure-rbac")
                return changes

        return await retry(once, Poll(self.plan.config.daemon.start_timeout,
                                      Backoff(HEALTH_POLL, 2.0, 1.0)),
                           lambda e: isinstance(e, EtcdError) and e.unavailable)


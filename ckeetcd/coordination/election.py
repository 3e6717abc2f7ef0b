"""Leader election among the daemons of one cluster, and the fence on every step.

This module keeps the campaign (lease, leader key, presence) and the fence.
What each role may run is decided by the one pure plan (ckeetcd.core.planner),
from the `Standing` this module gives it; the loop hands the role back
(`see`) for the fence and the `role_changed` event.

Several daemons (one per control-plane node, same config) observe the same
cluster; only one may change it. They elect a leader through the managed
cluster itself:

- A daemon campaigns by granting a lease (`[daemon] lease_ttl`) and creating
  `/ckeetcd/leader` on it in one Txn that succeeds only if the key does not
  exist. The key's value names the daemon (id, host, pid); its
  create_revision is the leadership *term*. The leader refreshes the lease
  every TTL/3; a leader that stops (SIGTERM) revokes it, one that dies
  (kill -9) loses it when the TTL runs out, and a follower polling every
  probe interval takes over at most TTL + one probe interval later.
- Only the leader runs ops. Followers observe, log, serve `ckeetcd status`
  and keep their own node's etcd servers file (`stop-apiserver-traffic` and
  `publish-endpoints` are node-local: they run on every daemon, unfenced).
- Every other step is fenced: before it acts, a linearizable Txn compares the
  leader key's create_revision and value with ours; when it fails, the step
  fails (`NotLeader`) and the daemon steps down. And the leader acts only
  while its lease is surely alive by its own clock: it counts the TTL from
  *before* it sent the last keepalive, and stops one RPC deadline short of it
  (a fence that finds the lease that short sends a keepalive first, and fails
  only when that does not extend it).

What a fence can and cannot guarantee: KV writes could be made conditional
inside the Txn itself, but the member API (MemberAdd/Remove/Promote), process
starts and stops over SSH, and file writes cannot be part of a Txn. The fence
proves we were leader at the moment of the Txn; the local lease deadline
bounds how long after that we may still act (the lease cannot expire on the
etcd side earlier than TTL after our keepalive was sent, and no other daemon
can win before it expires). The remaining gap is a pause longer than one RPC
deadline between the fence and the call it guards (a stalled process, a
clock that jumps), after which a deposed leader could still send one call.
Every op step re-checks its precondition and is idempotent, so such a late
call repeats or no-ops what the new leader does rather than undoing it.

Without quorum there is nothing to elect through (no Txn can succeed): then
the one daemon named by `[daemon] bootstrapper` (default: the first member's
name) acts alone, unfenced. That covers the bootstrap of a new cluster and
the restarts that bring quorum back. Every other daemon does one thing only:
it restarts a stopped member *of its own node* (whose address is one of this
host's) on the data it has, so quorum comes back even when the bootstrapper's
host is the one that is down. That is always safe (no membership change; the
node's start is idempotent under a lock, should the bootstrapper start the
same member at the same moment).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ckeetcd.coordination.presence import Presence, membership_of
from ckeetcd.core.config import Config
from ckeetcd.core.kinds import NODE_LOCAL_OPS, Role
from ckeetcd.core.model import Observed, Op
from ckeetcd.core.planner import ALONE, Standing, self_heal
from ckeetcd.etcd import ClientPool, EtcdError
from ckeetcd.etcd import lease as leases

LEADER_KEY = b"/ckeetcd/leader"


class NotLeader(Exception):
    """This daemon is not (or no longer surely) the leader: the step must not act."""


def daemon_id(config: Config) -> str:
    return config.daemon.id or socket.gethostname()


def members_of_this_host(config: Config) -> frozenset[str]:
    """Members whose address is one of this host's (a socket can bind to it)."""
    own = set()
    for m in config.members:
        try:
            family = socket.AF_INET6 if ":" in m.address else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((m.address, 0))
        except OSError:
            continue
        own.add(m.name)
    return frozenset(own)


class Leadership:
    """Election state of this daemon; `run()` is its background task."""

    name = "election"

    def __init__(self, config: Config, pool: ClientPool, log: Any, can_lead: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.log = log
        self.can_lead = can_lead
        self.clock = clock
        self.id = daemon_id(config)
        self.value = json.dumps({"id": self.id, "host": socket.gethostname(),
                                 "pid": os.getpid(), "since": round(time.time(), 3)}).encode()
        self.role = Role.SINGLE
        self.holder = ""  # id of the leader as last seen ("" = none or unknown)
        self._claim: leases.Claim | None = None
        self._expires = 0.0  # our lease is surely alive until this clock() reading
        self._quorum = False
        self._endpoints: list[str] = []
        self._changed = False
        self.presence = Presence(self.id, log)
        self._wake = asyncio.Event()
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self.membership = membership_of(config)
        self._wake.set()  # publish a changed membership now, not a poll later
        self.enabled = config.election
        self.ttl = config.daemon.lease_ttl
        self.poll = config.daemon.probe_interval
        self.rpc_timeout = config.daemon.rpc_timeout
        self.bootstrapper = config.bootstrapper
        self.own_members = members_of_this_host(config) if self.enabled else frozenset()
        if not self._endpoints:
            self._endpoints = [config.client_url(m) for m in config.members]

    @property
    def term(self) -> int:
        return self._claim.create_revision if self._claim else 0

    def leading(self) -> bool:
        """We hold the key and our lease is alive for at least one more RPC deadline."""
        return self._claim is not None and self.clock() + self.rpc_timeout < self._expires

    def may_act(self) -> bool:
        """Whether this daemon may change things outside itself right now."""
        return not self.enabled or self.leading()

    def role_changed(self) -> bool:
        """True once after the role changed (so the loop logs a cycle at once)."""
        changed, self._changed = self._changed, False
        return changed

    # ---- the loop's view --------------------------------------------------------
    def standing(self) -> Standing:
        """What plan() needs to know about this daemon now (reads the clock once)."""
        if not self.enabled:
            return ALONE
        return Standing(elected=True, leading=self.leading(),
                        bootstrapper=self.id == self.bootstrapper and self.can_lead,
                        own_members=self.own_members, peers=self.presence.peers)

    def see(self, observed: Observed, role: Role) -> None:
        """Take in the cycle's observation and the role plan() gave: the campaign
        needs the quorum and healthy endpoints, the fence and the log the role."""
        self._quorum = observed.has_quorum()
        leader = observed.leader_id()
        voters = sorted(observed.healthy_voters(), key=lambda m: m.id != leader)
        urls = [m.client_urls[0] for m in voters if m.client_urls]
        if urls:
            self._endpoints = urls
        self._set_role(role)

    def _set_role(self, role: Role) -> None:
        if role != self.role:
            self.log.info("role_changed", daemon=self.id, role=role, previous=self.role,
                          term=self.term, leader=self.holder or None)
            self.role = role
            self._changed = True

    async def fence(self, op: Op) -> None:
        """Raise NotLeader unless this daemon may act for `op` right now."""
        if not self.enabled or op.kind in NODE_LOCAL_OPS or self.role == Role.BOOTSTRAPPER:
            return
        if self.role == Role.FOLLOWER and self_heal(op, self.own_members, self._quorum):
            return
        held = self._claim
        if held is None or self.role != Role.LEADER:
            raise NotLeader(f"{self.id} is not the leader (leader: {self.holder or 'none'})")
        if self.clock() + self.rpc_timeout >= self._expires:
            # The background keepalive fell behind (a busy machine, a slow member):
            # renew now rather than fail a step in the middle of an op (a move-leader
            # that moved the leader but could not watch it, a stop half done).
            with contextlib.suppress(EtcdError):
                await self._renew()
            if self._claim is not held or self.clock() + self.rpc_timeout >= self._expires:
                raise NotLeader(f"{self.id}: lease {held.lease:x} may expire before this "
                                "step ends")
        if not await leases.still_holds(self._client(), LEADER_KEY, held):
            self._lose("fence failed: the leader key is no longer ours")
            raise NotLeader(f"{self.id}: the leader key is no longer ours "
                            f"(term {held.create_revision})")

    # ---- the background task ------------------------------------------------------
    async def run(self) -> None:
        failures = 0
        while True:
            if self.enabled:
                try:
                    if self._claim is not None:
                        await self._renew()
                    elif self.can_lead and self._quorum:
                        await self._campaign()
                    if self._quorum:
                        await self.presence.refresh(self._client(), max(self.ttl, 3),
                                                    self.membership, self._claim is not None,
                                                    self._root_cert())
                    failures = 0
                except EtcdError as e:
                    failures += 1
                    self._endpoints = self._endpoints[1:] + self._endpoints[:1]
                    if self._claim is not None and self.clock() >= self._expires:
                        self._lose(f"could not renew the lease: {e.code}: {e.details}")
                    elif failures == 3:
                        self.log.warning("election_error", daemon=self.id,
                                         error=f"{e.code}: {e.details}")
            pause = max(self.ttl / 3, 0.2) if self._claim else self.poll
            if self._claim and self.presence.drift:
                pause = 0.2  # changes wait on the others' configs: see them fixed at once
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(pause, self.ttl / 3))

    def _client(self) -> Any:
        return self.pool.get(self._endpoints[0])

    def _root_cert(self) -> bytes | None:
        """This daemon's root client certificate as presented now (for presence)."""
        try:
            return Path(self.pool.tls.cert).read_bytes()
        except OSError:
            return None

    async def _campaign(self) -> None:
        client = self._client()
        start = self.clock()
        lease, ttl = await leases.grant(client, self.ttl)
        try:
            won, claim = await leases.claim(client, LEADER_KEY, self.value, lease)
        except BaseException:
            await asyncio.shield(self._revoke_quietly(client, lease))
            raise
        if won and claim is not None:
            self._claim = claim
            self._expires = start + ttl
            self.holder = self.id
            self.presence.new_term()
            self.log.info("leadership_acquired", daemon=self.id, term=claim.create_revision,
                          lease=f"{lease:x}", ttl=ttl)
            return
        await self._revoke_quietly(client, lease)
        holder = _holder(claim)
        if holder != self.holder:
            self.holder = holder
            self.log.info("leader_seen", daemon=self.id, leader=holder or None,
                          term=claim.create_revision if claim else 0)

    async def _renew(self) -> None:
        held = self._claim
        assert held is not None
        start = self.clock()
        ttl = await leases.keepalive(self._client(), held.lease, timeout=self.rpc_timeout)
        if ttl <= 0:
            self._lose("lease expired")
            return
        if self._claim is held:
            self._expires = start + ttl

    def _lose(self, why: str) -> None:
        if self._claim is None:
            return
        self.log.warning("leadership_lost", daemon=self.id, term=self._claim.create_revision,
                         reason=why)
        self._claim = None
        self._expires = 0.0
        self.holder = ""

    async def _revoke_quietly(self, client: Any, lease: int) -> None:
        with contextlib.suppress(EtcdError):  # else it expires on its own
            await leases.revoke(client, lease)

    async def resign(self) -> None:
        """On a clean stop: hand leadership over at once instead of after the TTL."""
        held, self._claim = self._claim, None
        if held is not None:
            try:
                await leases.revoke(self._client(), held.lease)
                self.log.info("leadership_released", daemon=self.id, term=held.create_revision)
            except EtcdError as e:
                self.log.warning("leadership_release_failed", daemon=self.id,
                                 error=f"{e.code}: {e.details}")
        if self.enabled:  # after the handover: it must not wait on this
            await self.presence.withdraw(self._client())


def _holder(claim: leases.Claim | None) -> str:
    if claim is None:
        return ""
    try:
        return str(json.loads(claim.value).get("id", ""))
    except (ValueError, AttributeError):
        return claim.value.decode(errors="replace")

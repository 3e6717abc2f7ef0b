"""Gather one immutable snapshot of the cluster, concurrently, with deadlines.

Every endpoint is asked at once and each answer has a short deadline, so a
hung member costs one deadline, not one per member. The observer keeps only
what etcd cannot tell: how long a learner has been a learner, and whether a
cluster was ever formed here (a marker file in the state dir).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from ckeetcd.coordination.pause import read_pause
from ckeetcd.core.carotation import CLIENT, PEER, RotationSeen
from ckeetcd.core.etcdversions import auth_status_safe, parse_version
from ckeetcd.core.model import (
    Desired,
    DesiredMember,
    Health,
    LiveMember,
    MemberExit,
    Observed,
    Runtime,
)
from ckeetcd.etcd import ClientPool, EtcdError
from ckeetcd.etcd.rbac import rbac_in_place
from ckeetcd.loop.rotationseen import SignerCache
from ckeetcd.loop.rotationseen import see as see_rotations
from ckeetcd.nodes import MemberRuntime
from ckeetcd.pki import PEER_CA_CERT, cert_cn, member_tls_problem, not_after
from ckeetcd.pki.rotationfiles import Rotation, ca_pem_for, peer_pem_for
from ckeetcd.support.startbook import StartBook

FORMED_MARKER = "cluster-formed.json"


def read_published(path: Path | None) -> tuple[str, ...] | None:
    """Client URLs in the etcd servers file (None when no file is kept)."""
    if path is None:
        return None
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return ()
    return tuple(u for u in text.split(",") if u)


class Observer:
    def __init__(self, runtime: MemberRuntime, pool: ClientPool, state_dir: Path,
                 servers_file: Path | None, probe_timeout: float,
                 readonly: bool = False, ca_pem: bytes | None = None,
                 peer_ca_pem: bytes | None = None,
                 renew_before: dt.timedelta = dt.timedelta(days=30),
                 book: StartBook | None = None, pki_dir: Path | None = None) -> None:
        self.runtime = runtime
        self.pki_dir = pki_dir  # CA rotations are read there (None: not looked for)
        self._rotations: dict[str, Rotation] = {}
        self._signers: SignerCache = {}
        # Restart back-off and exits (ckeetcd.support.startbook); read-only for the commands.
        self.book = book
        self.pool = pool
        self.marker = state_dir / FORMED_MARKER
        self.state_dir = state_dir
        self.servers_file = servers_file
        self.probe_timeout = probe_timeout
        self.readonly = readonly
        self.ca_pem = ca_pem
        self.peer_ca_pem = peer_ca_pem  # None: one CA (a cluster made before the peer CA)
        self.renew_before = renew_before
        self._tls_problems: dict[str, str] = {}
        self._peer_cn: dict[str, str] = {}  # CN of each desired member's peer.crt ("" none)
        self._cert_expiry: dict[str, float] = {}
        self._learner_seen: dict[int, float] = {}
        self._known_client_urls: tuple[str, ...] = ()
        # names from the last member list: when nobody answers, a member that
        # left the config may be the one whose restart brings quorum back
        self._known_names: tuple[str, ...] = ()
        self._rbac_ready: bool | None = None
        self._rbac_verified: tuple[object, ...] | None = None
        self._cluster_version = ""
        self._versions_seen: tuple[tuple[int, str], ...] | None = None

    @property
    def formed(self) -> bool:
        return self.marker.exists()

    async def observe(self, desired: Desired, deep: bool = False) -> Observed:
        """One snapshot; `deep` also re-checks users, roles and auth."""
        endpoints = tuple(dict.fromkeys(
            [d.client_url for d in desired.members] + list(self._known_client_urls)))
        statuses = await asyncio.gather(*(self._status(e) for e in endpoints))
        by_endpoint = dict(zip(endpoints, statuses, strict=True))
        members = await self._member_list(by_endpoint)
        health: dict[int, Health] = {}
        if members is not None:
            # Members this observer has not asked yet (a fresh `ckeetcd status`, a
            # member added out of band): ask them now rather than report "no answer".
            unasked = [u for m in members for u in m.client_urls[:1] if u not in by_endpoint]
            if unasked:
                more = await asyncio.gather(*(self._status(u) for u in unasked))
                by_endpoint.update(zip(unasked, more, strict=True))
                statuses = [*statuses, *more]
            self._known_client_urls = tuple(u for m in members for u in m.client_urls[:1])
            self._known_names = tuple(m.name for m in members if m.name)
            for m in members:
                h = next((h for e, h in by_endpoint.items()
                          if h.member_id == m.id and h.healthy), None)
                if h is None:
                    h = next((h for e, h in by_endpoint.items()
                              if e in m.client_urls or e == _desired_url(desired, m)),
                             Health(healthy=False, member_id=m.id, error="no answer"))
                health[m.id] = h
        names = [d.name for d in desired.members]
        live_names = [m.name for m in members if m.name] if members else self._known_names
        names += [n for n in live_names if n not in names]
        alarms = {a for h in statuses for a in h.alarms}
        rotation = await self._see_rotations(desired, deep)

        # The remaining questions are independent: ask them all at once.
        async def runtimes_now() -> list[Runtime]:
            return list(await asyncio.gather(*(self._inspect(n) for n in names)))

        async def tls() -> None:
            if deep or not self._tls_problems:
                await self._check_tls(desired, [n for n in names if not desired.by_name(n)])

        async def more_alarms() -> set[tuple[int, str]]:
            if members is not None and (deep or alarms):
                return await self._alarms(members, health)
            return set()

        versions = asyncio.ensure_future(self._cluster_version_now(members, health, deep))

        async def rbac() -> None:
            if members is not None and (deep or self._rbac_ready is not True):
                safe = auth_status_safe([(f"{i:x}", h.version) for i, h in health.items()
                                         if h.healthy], await versions)
                self._rbac_ready = await self._check_rbac(desired, members, health, safe)

        runtimes, _, extra_alarms, _, cluster_version = await asyncio.gather(
            runtimes_now(), tls(), more_alarms(), rbac(), versions)
        alarms |= extra_alarms
        runtimes = [replace(r, tls_problem=self._tls_problems.get(n, ""),
                            peer_cert_cn=self._peer_cn.get(n)) if r.reachable else r
                    for n, r in zip(names, runtimes, strict=True)]
        if self.book is not None:
            runtimes = await self._book_keeping(desired, members, health, names, runtimes)
        ages = self._learner_ages(members)
        if not self.readonly and members and not self.formed and all(
            health[m.id].healthy for m in members
        ):
            self._mark_formed(members)
        return Observed(
            members=members,
            health=MappingProxyType(health),
            runtimes=MappingProxyType(dict(zip(names, runtimes, strict=True))),
            rbac_ready=self._rbac_ready,
            learner_ages=MappingProxyType(ages),
            formed=self.formed,
            published=read_published(self.servers_file),
            alarms=tuple(sorted(alarms)),
            paused=read_pause(self.state_dir),
            cert_expiry=MappingProxyType(dict(self._cert_expiry)),
            cluster_version=cluster_version,
            rotation=rotation,
        )

    async def _see_rotations(self, desired: Desired, deep: bool) -> RotationSeen | None:
        """CA rotations (ckeetcd.loop.rotationseen); the peer CA is read again while one
        is recorded (a finished peer rotation puts a new peer-ca.crt in place)."""
        if self.pki_dir is None:
            return None
        seen, self._rotations = await see_rotations(self.pki_dir, self.runtime,
                                                    [d.name for d in desired.members],
                                                    self._signers, deep)
        if PEER in self._rotations:
            peer = self.pki_dir / PEER_CA_CERT
            self.peer_ca_pem = peer.read_bytes() if peer.exists() else None
        if CLIENT in self._rotations:  # a finished client rotation puts a new ca.crt in place
            client = self.pki_dir / "ca.crt"
            self.ca_pem = client.read_bytes() if client.exists() else self.ca_pem
        return seen

    async def _cluster_version_now(self, members: tuple[LiveMember, ...] | None,
                                   health: dict[int, Health], deep: bool) -> str:
        """etcd's cluster version (`/version` of one healthy member). Asked again on deep
        observations, when any member's version changed, and while it is behind the
        members' (etcd raises it a few seconds after the last member is upgraded)."""
        if members is None:
            return self._cluster_version
        seen = tuple(sorted((i, h.version) for i, h in health.items() if h.healthy))
        lines = {v.minor_line for _, text in seen if (v := parse_version(text)) is not None}
        known = parse_version(self._cluster_version)
        settled = known is not None and lines == {known.minor_line}
        if not deep and seen == self._versions_seen and settled:
            return self._cluster_version
        for m in members:
            if health[m.id].healthy and m.client_urls:
                try:
                    got = await self.pool.get(m.client_urls[0]).version(self.probe_timeout)
                except EtcdError:
                    continue
                cv = got.get("etcdcluster", "")
                self._cluster_version = "" if cv == "not_decided" else cv
                self._versions_seen = seen
                break
        return self._cluster_version

    async def _book_keeping(self, desired: Desired, members: tuple[LiveMember, ...] | None,
                            health: dict[int, Health], names: list[str],
                            runtimes: list[Runtime]) -> list[Runtime]:
        """Feed the start book what was seen (exits are logged there), then stamp each
        runtime with its restart hold."""
        book = self.book
        assert book is not None
        healthy: set[str] = set()
        for m in members or ():
            d = desired.by_peer_url(m.peer_url)
            if health.get(m.id, Health(healthy=False)).healthy:
                healthy.add(d.name if d else m.name)
        if not self.readonly:
            for n, r in zip(names, runtimes, strict=True):
                if r.reachable and book.seen(n, r.running, r.pid, n in healthy,
                                              r.disk_free):
                    try:
                        info = await asyncio.wait_for(self.runtime.exit_info(n),
                                                      self.probe_timeout * 2)
                    except (OSError, TimeoutError) as e:
                        info = MemberExit(f"unknown (its node did not say: {e})")
                    book.exited(n, info)
        return [book.stamp(n, r) for n, r in zip(names, runtimes, strict=True)]

    async def _alarms(self, members: tuple[LiveMember, ...],
                      health: dict[int, Health]) -> set[tuple[int, str]]:
        """The cluster's alarm list from one healthy member (Status errors list them too;
        this is the authoritative read, done on deep observations and while any is on)."""
        for m in members:
            if health[m.id].healthy and m.client_urls:
                try:
                    return set(await self.pool.get(m.client_urls[0]).alarms())
                except EtcdError:
                    continue
        return set()

    async def _status(self, endpoint: str) -> Health:
        try:
            return await self.pool.get(endpoint).status(timeout=self.probe_timeout)
        except EtcdError as e:
            return Health(healthy=False, error=f"{e.code}: {e.details}")

    async def _member_list(self, by_endpoint: dict[str, Health]) -> tuple[LiveMember, ...] | None:
        ordered = sorted(by_endpoint.items(),
                         key=lambda kv: (not kv[1].healthy, kv[1].member_id == 0))
        for endpoint, h in ordered:
            if h.member_id == 0:
                continue
            try:
                return await self.pool.get(endpoint).member_list()
            except EtcdError:
                continue
        return None

    async def _inspect(self, name: str) -> Runtime:
        """The probe deadline is for asking an open connection. A one-shot command
        (`status`, `plan`: readonly) opens its SSH connections first, within their own
        `connect_timeout`: a login slower than the probe deadline (or the first import
        of asyncssh) must not show a running member as "TimeoutError", not running. The
        daemon does not wait on that: its connections stay open, and a probe must not
        stall on a node that does not answer."""
        try:
            if self.readonly:
                await self.runtime.connect(name)
            return await asyncio.wait_for(self.runtime.inspect(name), self.probe_timeout * 2)
        except (OSError, TimeoutError) as e:
            return Runtime(reachable=False, error=str(e) or type(e).__name__)

    async def _check_tls(self, desired: Desired, leaving: list[str]) -> None:
        """Certificate problems per desired member (only on deep observations: file reads),
        and the CN of every member's peer certificate, `leaving` ones too (a peer that
        presents another CN holds --peer-cert-allowed-cn back: ckeetcd.core.peercn)."""
        if self.ca_pem is None:
            return
        now = dt.datetime.now(dt.timezone.utc)
        names: tuple[str, ...] = ("ca.crt", "server.crt", "peer.crt", "server.key", "peer.key")
        ca_pem = self.ca_pem
        if self.peer_ca_pem is not None or PEER in self._rotations:
            names += (PEER_CA_CERT,)

        async def problem(d: DesiredMember) -> str | None:
            try:
                got = await asyncio.gather(*(self.runtime.read_tls(d.name, f) for f in names))
            except OSError:
                return None
            expiry = [_not_after(pem) for pem in got[1:3]]
            if known := [t for t in expiry if t is not None]:
                self._cert_expiry[d.name] = min(known)
            if (cn := _cn(got[2])) is not None:
                self._peer_cn[d.name] = cn
            return member_tls_problem(dict(zip(names, got, strict=True)),
                                      ca_pem_for(got[1], self._rotations.get(CLIENT), ca_pem),
                                      d.address,
                                      desired.member_dns, self.renew_before, now,
                                      peer_ca_pem=peer_pem_for(
                                          got[2], self._rotations.get(PEER), self.peer_ca_pem))

        async def peer_cn(name: str) -> None:
            try:
                cn = _cn(await self.runtime.read_tls(name, "peer.crt"))
            except OSError:
                return
            if cn is not None:
                self._peer_cn[name] = cn

        self._cert_expiry, self._peer_cn = {}, {}
        found, _ = await asyncio.gather(asyncio.gather(*(problem(d) for d in desired.members)),
                                        asyncio.gather(*(peer_cn(n) for n in leaving)))
        self._tls_problems = {d.name: p for d, p in zip(desired.members, found, strict=True)
                              if p is not None}

    def _learner_ages(self, members: tuple[LiveMember, ...] | None) -> dict[int, float]:
        now = time.monotonic()
        learners = {m.id for m in members or () if m.learner}
        self._learner_seen = {i: self._learner_seen.get(i, now) for i in learners}
        return {i: now - t for i, t in self._learner_seen.items()}

    async def _check_rbac(self, desired: Desired, members: tuple[LiveMember, ...],
                          health: dict[int, Health], auth_status: bool) -> bool | None:
        healthy = [m for m in members if health[m.id].healthy and m.client_urls and not m.learner]
        if not healthy:
            return self._rbac_ready
        client = self.pool.get(healthy[0].client_urls[0])
        try:
            # One AuthStatus instead of a read per user and role when nothing
            # changed since the last check that passed (for the same desires).
            # AuthStatus only where no 3.4 member can be hurt by it (auth_status_safe)
            auth = await client.auth_revision() if auth_status else None
            key = (auth, desired.users, desired.prune_users) if auth else None
            if key is not None and key == self._rbac_verified:
                return True
            ok = await rbac_in_place(client, desired, auth_status)
            self._rbac_verified = key if ok else None
            return ok
        except EtcdError:
            return self._rbac_ready

    def _mark_formed(self, members: tuple[LiveMember, ...]) -> None:
        self.marker.write_text(json.dumps(
            {"formed_at": time.time(), "members": [m.name for m in members]}))


def _not_after(pem: bytes | None) -> float | None:
    try:
        return not_after(pem).timestamp() if pem else None
    except ValueError:
        return None


def _cn(pem: bytes | None) -> str | None:
    """The CN of a member's peer.crt: "" when there is none, None when unreadable."""
    if pem is None:
        return ""
    try:
        return cert_cn(pem)
    except ValueError:
        return None


def _desired_url(desired: Desired, m: LiveMember) -> str:
    d = desired.by_peer_url(m.peer_url)
    return d.client_url if d else ""

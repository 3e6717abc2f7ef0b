"""A thin TLS client for one etcd endpoint, on aetcd's generated stubs.

aetcd 1.0 opens only insecure channels and drops `isLearner`; we keep its
stubs and messages and open a `grpc.aio.secure_channel` ourselves, one per
member (a multi-address channel would check every member against one name).
Every call has a deadline, so a hung member cannot stall the loop.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import grpc
from aetcd import rpc

from ckeetcd.core.keyspace import prefix_end
from ckeetcd.core.model import Health, LiveMember
from ckeetcd.pki import TLSFiles


class EtcdError(Exception):
    """An etcd RPC failed; `code` is the gRPC status code name."""

    def __init__(self, endpoint: str, code: str, details: str) -> None:
        self.endpoint = endpoint
        self.code = code
        self.details = details
        super().__init__(f"{endpoint}: {code}: {details}")

    @property
    def permission_denied(self) -> bool:
        return self.code == "PERMISSION_DENIED"

    @property
    def unavailable(self) -> bool:
        return self.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


@dataclass(frozen=True)
class PemTLS:
    """CA, client certificate and key as PEM bytes: credentials that never touch disk."""

    ca: bytes
    cert: bytes
    key: bytes

    @staticmethod
    def read(tls: TLSFiles) -> PemTLS:
        return PemTLS(ca=Path(tls.ca).read_bytes(), cert=Path(tls.cert).read_bytes(),
                      key=Path(tls.key).read_bytes())


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int


ALARM_TYPES = {"NOSPACE": rpc.NOSPACE, "CORRUPT": rpc.CORRUPT}
_ALARM = re.compile(r"(?:memberID:([0-9]+) )?alarm:([A-Z]+)")


def parse_alarm(error: str) -> tuple[int, str] | None:
    """`memberID:123 alarm:NOSPACE` (an entry of Status errors) -> (123, "NOSPACE")."""
    m = _ALARM.fullmatch(error.strip())
    return (int(m.group(1) or 0), m.group(2)) if m else None


def _target(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port or 2379}"


class EtcdClient:
    """One secure channel to one member's client URL."""

    def __init__(self, endpoint: str, tls: TLSFiles | PemTLS, timeout: float = 2.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        pem = self.pem = tls if isinstance(tls, PemTLS) else PemTLS.read(tls)
        creds = grpc.ssl_channel_credentials(
            root_certificates=pem.ca, private_key=pem.key, certificate_chain=pem.cert
        )
        self.channel = grpc.aio.secure_channel(
            _target(endpoint),
            creds,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            ],
        )
        self._kv = rpc.KVStub(self.channel)
        self._cluster = rpc.ClusterStub(self.channel)
        self._maint = rpc.MaintenanceStub(self.channel)
        self._auth = rpc.AuthStub(self.channel)

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method: object, request: object, timeout: float | None = None) -> object:
        try:
            return await method(request, timeout=timeout or self.timeout)  # type: ignore[operator]
        except grpc.aio.AioRpcError as e:
            raise EtcdError(self.endpoint, e.code().name, e.details() or "") from e

    # ---- maintenance -------------------------------------------------------
    async def status(self, timeout: float | None = None) -> Health:
        """Health as the member reports it. Active alarms (which etcd lists among
        the errors) are returned apart: a member with NOSPACE still serves."""
        r = await self._call(self._maint.Status, rpc.StatusRequest(), timeout)
        parsed = [(e, parse_alarm(e)) for e in r.errors]  # type: ignore[attr-defined]
        errors = "; ".join(e.strip() for e, a in parsed if a is None)
        return Health(
            healthy=bool(r.leader) and not errors,  # type: ignore[attr-defined]
            member_id=r.header.member_id,  # type: ignore[attr-defined]
            leader_id=r.leader,  # type: ignore[attr-defined]
            raft_index=r.raftIndex,  # type: ignore[attr-defined]
            raft_term=r.raftTerm,  # type: ignore[attr-defined]
            db_size=r.dbSize,  # type: ignore[attr-defined]
            learner=bool(getattr(r, "isLearner", False)),
            version=r.version,  # type: ignore[attr-defined]
            error=errors or ("" if r.leader else "no leader"),  # type: ignore[attr-defined]
            db_size_in_use=r.dbSizeInUse,  # type: ignore[attr-defined]
            raft_applied_index=r.raftAppliedIndex,  # type: ignore[attr-defined]
            alarms=tuple(sorted({a for _, a in parsed if a is not None})),
            revision=r.header.revision,  # type: ignore[attr-defined]
        )

    async def version(self, timeout: float | None = None) -> dict[str, str]:
        """etcd's `/version` (server and cluster version), over HTTPS: no RPC says
        the cluster version (ckeetcd.etcd.versionurl)."""
        from ckeetcd.etcd.versionurl import fetch_version

        return await fetch_version(self.endpoint, self.pem, timeout or self.timeout)

    async def revision(self) -> int:
        """The store's current revision, as this member sees it."""
        r = await self._call(self._maint.Status, rpc.StatusRequest())
        return int(r.header.revision)  # type: ignore[attr-defined]

    async def compact(self, revision: int, timeout: float = 60.0) -> None:
        """Compact history up to `revision`, physically (returns once it is applied here)."""
        req = rpc.CompactionRequest(revision=revision, physical=True)
        await self._call(self._kv.Compact, req, timeout)

    async def defragment(self, timeout: float = 600.0) -> None:
        """Defragment this member's backend (it blocks reads and writes meanwhile)."""
        await self._call(self._maint.Defragment, rpc.DefragmentRequest(), timeout)

    async def move_leader(self, target_id: int, timeout: float | None = None) -> None:
        """Hand raft leadership to `target_id`; only the leader accepts it."""
        await self._call(self._maint.MoveLeader, rpc.MoveLeaderRequest(targetID=target_id),
                         timeout)

    async def alarm(self, action: str, member_id: int, alarm: str) -> None:
        """ACTIVATE or DEACTIVATE `alarm` ("NOSPACE", "CORRUPT") for `member_id`."""
        req = rpc.AlarmRequest(action=getattr(rpc.AlarmRequest, action), memberID=member_id,
                               alarm=ALARM_TYPES[alarm])
        await self._call(self._maint.Alarm, req)

    async def alarms(self) -> tuple[tuple[int, str], ...]:
        req = rpc.AlarmRequest(action=rpc.AlarmRequest.GET, memberID=0, alarm=rpc.NONE)
        r = await self._call(self._maint.Alarm, req)
        names = {v: k for k, v in ALARM_TYPES.items()}
        return tuple(
            (a.memberID, names.get(a.alarm, str(a.alarm)))
            for a in r.alarms  # type: ignore[attr-defined]
        )

    async def snapshot(self, timeout: float = 600.0) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._maint.Snapshot(rpc.SnapshotRequest(), timeout=timeout):
                yield chunk.blob
        except grpc.aio.AioRpcError as e:
            raise EtcdError(self.endpoint, e.code().name, e.details() or "") from e

    # ---- cluster -----------------------------------------------------------
    async def member_list(self, linearizable: bool = False) -> tuple[LiveMember, ...]:
        req = rpc.MemberListRequest()
        with contextlib.suppress(ValueError):
            req = rpc.MemberListRequest(linearizable=linearizable)
        r = await self._call(self._cluster.MemberList, req)
        return tuple(
            LiveMember(
                id=m.ID,
                name=m.name,
                peer_urls=tuple(m.peerURLs),
                client_urls=tuple(m.clientURLs),
                learner=bool(m.isLearner),
            )
            for m in r.members  # type: ignore[attr-defined]
        )

    async def member_add(self, peer_url: str, learner: bool = True) -> LiveMember:
        req = rpc.MemberAddRequest(peerURLs=[peer_url], isLearner=learner)
        r = await self._call(self._cluster.MemberAdd, req)
        m = r.member  # type: ignore[attr-defined]
        return LiveMember(m.ID, m.name, tuple(m.peerURLs), tuple(m.clientURLs), m.isLearner)

    async def member_remove(self, member_id: int) -> None:
        await self._call(self._cluster.MemberRemove, rpc.MemberRemoveRequest(ID=member_id))

    async def member_promote(self, member_id: int) -> None:
        await self._call(self._cluster.MemberPromote, rpc.MemberPromoteRequest(ID=member_id))

    # ---- kv ----------------------------------------------------------------
    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        r = await self._call(self._kv.Put, rpc.PutRequest(key=key, value=value, lease=lease))
        return int(r.header.revision)  # type: ignore[attr-defined]

    async def get(self, key: bytes, serializable: bool = False) -> KeyValue | None:
        r = await self._call(self._kv.Range, rpc.RangeRequest(key=key, serializable=serializable))
        kvs = r.kvs  # type: ignore[attr-defined]
        return KeyValue(kvs[0].key, kvs[0].value, kvs[0].mod_revision) if kvs else None

    async def put_if(self, key: bytes, value: bytes, mod_revision: int) -> bool:
        """Put `value` only while `key` was last changed at `mod_revision` (0: absent):
        a compare-and-swap, so a writer that read a stale copy changes nothing."""
        req = rpc.TxnRequest(
            compare=[rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, key=key,
                                 mod_revision=mod_revision)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))])
        r = await self._call(self._kv.Txn, req)
        return bool(r.succeeded)  # type: ignore[attr-defined]

    async def get_prefix(self, prefix: bytes) -> list[KeyValue]:
        req = rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix))
        r = await self._call(self._kv.Range, req)
        return [KeyValue(k.key, k.value, k.mod_revision) for k in r.kvs]  # type: ignore[attr-defined]

    async def delete(self, key: bytes) -> int:
        r = await self._call(self._kv.DeleteRange, rpc.DeleteRangeRequest(key=key))
        return int(r.deleted)  # type: ignore[attr-defined]

    # ---- auth --------------------------------------------------------------
    async def auth_enable(self) -> None:
        await self._call(self._auth.AuthEnable, rpc.AuthEnableRequest())

    async def auth_enabled(self) -> bool | None:
        """True/False on 3.5; None on 3.4, which has no AuthStatus."""
        status = await self.auth_revision()
        return None if status is None else status[0]

    async def auth_revision(self) -> tuple[bool, int] | None:
        """(auth enabled, auth revision) on 3.5; None on 3.4 (no AuthStatus).

        The revision moves on every user, role or permission change, so an
        unchanged revision means an RBAC check that passed still holds.
        """
        try:
            r = await self._call(self._auth.AuthStatus, rpc.AuthStatusRequest())
        except EtcdError as e:
            if e.code == "UNIMPLEMENTED":
                return None
            raise
        return bool(r.enabled), int(r.authRevision)  # type: ignore[attr-defined]

    async def user_list(self) -> tuple[str, ...]:
        r = await self._call(self._auth.UserList, rpc.AuthUserListRequest())
        return tuple(r.users)  # type: ignore[attr-defined]

    async def user_get(self, name: str) -> tuple[str, ...] | None:
        """The user's roles, or None when the user does not exist."""
        try:
            r = await self._call(self._auth.UserGet, rpc.AuthUserGetRequest(name=name))
        except EtcdError as e:
            if "user name not found" in e.details:
                return None
            raise
        return tuple(r.roles)  # type: ignore[attr-defined]

    async def user_add(self, name: str) -> None:
        """Add a user that can only authenticate with a certificate."""
        req = rpc.AuthUserAddRequest(name=name, options=rpc.UserAddOptions(no_password=True))
        await self._call(self._auth.UserAdd, req)

    async def user_delete(self, name: str) -> None:
        await self._call(self._auth.UserDelete, rpc.AuthUserDeleteRequest(name=name))

    async def user_grant_role(self, user: str, role: str) -> None:
        req = rpc.AuthUserGrantRoleRequest(user=user, role=role)
        await self._call(self._auth.UserGrantRole, req)

    async def role_list(self) -> tuple[str, ...]:
        r = await self._call(self._auth.RoleList, rpc.AuthRoleListRequest())
        return tuple(r.roles)  # type: ignore[attr-defined]

    async def role_get(self, role: str) -> tuple[tuple[int, bytes, bytes], ...] | None:
        """(permType, key, range_end) per permission, or None when the role is missing."""
        try:
            r = await self._call(self._auth.RoleGet, rpc.AuthRoleGetRequest(role=role))
        except EtcdError as e:
            if "role name not found" in e.details:
                return None
            raise
        return tuple((p.permType, p.key, p.range_end) for p in r.perm)  # type: ignore[attr-defined]

    async def role_add(self, role: str) -> None:
        await self._call(self._auth.RoleAdd, rpc.AuthRoleAddRequest(name=role))

    async def role_delete(self, role: str) -> None:
        await self._call(self._auth.RoleDelete, rpc.AuthRoleDeleteRequest(role=role))

    async def role_grant_prefix(self, role: str, prefix: bytes) -> None:
        perm = rpc.Permission(permType=rpc.Permission.READWRITE, key=prefix,
                              range_end=prefix_end(prefix))
        req = rpc.AuthRoleGrantPermissionRequest(name=role, perm=perm)
        await self._call(self._auth.RoleGrantPermission, req)

    async def role_revoke(self, role: str, key: bytes, range_end: bytes) -> None:
        req = rpc.AuthRoleRevokePermissionRequest(role=role, key=key, range_end=range_end)
        await self._call(self._auth.RoleRevokePermission, req)

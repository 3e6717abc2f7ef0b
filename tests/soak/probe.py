"""The engine's own view of the cluster: member list, leader, health, data.

Synchronous grpc channels with aetcd's stubs and the daemon's root client
certificate, one channel per endpoint, kept open with a short reconnect
backoff (a restarted member is seen within about RECONNECT_MAX_MS). It shares
no code with the daemon's client: it is what the soak checks the daemon by.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from aetcd import rpc

from tests.soak.workload import grpc_target, prefix_end

RECONNECT_MAX_MS = 200


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_url: str
    client_url: str
    learner: bool


@dataclass(frozen=True)
class Status:
    member_id: int
    leader: int
    raft_index: int
    errors: tuple[str, ...]
    revision: int = 0  # the member's own store revision (header.revision)
    version: str = ""


@dataclass(frozen=True)
class KV:
    key: str
    value: str
    mod_revision: int
    create_revision: int
    version: int


class Probe:
    def __init__(self, ca: Path, cert: Path, key: Path, timeout: float = 0.5) -> None:
        self.timeout = timeout
        self._creds = grpc.ssl_channel_credentials(
            root_certificates=ca.read_bytes(), private_key=key.read_bytes(),
            certificate_chain=cert.read_bytes())
        self._channels: dict[str, grpc.Channel] = {}

    def _channel(self, url: str) -> grpc.Channel:
        if url not in self._channels:
            self._channels[url] = grpc.secure_channel(grpc_target(url), self._creds, options=[
                ("grpc.initial_reconnect_backoff_ms", 50),
                ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
                ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            ])
        return self._channels[url]

    def close(self) -> None:
        for c in self._channels.values():
            c.close()
        self._channels.clear()

    def members(self, url: str) -> list[Member] | None:
        try:
            r = rpc.ClusterStub(self._channel(url)).MemberList(
                rpc.MemberListRequest(linearizable=True), timeout=self.timeout)
        except grpc.RpcError:
            return None
        return [Member(m.ID, m.name, m.peerURLs[0] if m.peerURLs else "",
                       m.clientURLs[0] if m.clientURLs else "", bool(m.isLearner))
                for m in r.members]

    def status(self, url: str) -> Status | None:
        try:
            r = rpc.MaintenanceStub(self._channel(url)).Status(rpc.StatusRequest(),
                                                                timeout=self.timeout)
        except grpc.RpcError:
            return None
        return Status(r.header.member_id, r.leader, r.raftIndex, tuple(r.errors),
                      int(r.header.revision), str(r.version))

    def hash_kv(self, url: str, revision: int, timeout: float = 10.0) -> int | None:
        """etcd's hash of the member's whole key space at `revision` (None: no answer)."""
        try:
            r = rpc.MaintenanceStub(self._channel(url)).HashKV(
                rpc.HashKVRequest(revision=revision), timeout=timeout)
        except grpc.RpcError:
            return None
        return int(r.hash)

    def read_prefix(self, url: str, prefix: str, serializable: bool = False,
                    revision: int = 0, timeout: float = 30.0) -> tuple[int, list[KV]]:
        """Every key under `prefix` (and the revision read at); raises grpc.RpcError."""
        p = prefix.encode()
        r = rpc.KVStub(self._channel(url)).Range(
            rpc.RangeRequest(key=p, range_end=prefix_end(p), serializable=serializable,
                             revision=revision), timeout=timeout)
        return int(r.header.revision), [
            KV(kv.key.decode(), kv.value.decode(), kv.mod_revision, kv.create_revision,
               kv.version) for kv in r.kvs]

    def put(self, url: str, key: str, value: str) -> int:
        """One put (raises grpc.RpcError); the revision it made."""
        r = rpc.KVStub(self._channel(url)).Put(
            rpc.PutRequest(key=key.encode(), value=value.encode()), timeout=self.timeout)
        return int(r.header.revision)

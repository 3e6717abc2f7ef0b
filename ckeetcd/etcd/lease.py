"""Leases and the two transactions leader election needs, on an EtcdClient's channel."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from aetcd import rpc

from ckeetcd.etcd.client import EtcdClient, EtcdError


@dataclass(frozen=True)
class Claim:
    """Who holds `key`: its value and create revision (the leadership term)."""

    value: bytes
    create_revision: int
    lease: int


async def _call(client: EtcdClient, method: object, request: object,
                timeout: float | None = None) -> object:
    try:
        return await method(request, timeout=timeout or client.timeout)  # type: ignore[operator]
    except grpc.aio.AioRpcError as e:
        raise EtcdError(client.endpoint, e.code().name, e.details() or "") from e


def _lease(client: EtcdClient) -> rpc.LeaseStub:
    stub = getattr(client, "_ckeetcd_lease_stub", None)
    if stub is None:
        stub = rpc.LeaseStub(client.channel)
        client._ckeetcd_lease_stub = stub  # type: ignore[attr-defined]
    return stub


async def grant(client: EtcdClient, ttl: int) -> tuple[int, int]:
    """A new lease: (id, granted TTL in seconds; etcd may raise a too-small TTL)."""
    r = await _call(client, _lease(client).LeaseGrant, rpc.LeaseGrantRequest(TTL=ttl, ID=0))
    return int(r.ID), int(r.TTL)  # type: ignore[attr-defined]


async def keepalive(client: EtcdClient, lease: int, timeout: float | None = None) -> int:
    """Refresh `lease` once; returns its TTL (0: it had expired)."""
    call = _lease(client).LeaseKeepAlive(timeout=timeout or client.timeout)
    # No half-close after the answer: the call is cancelled anyway, and a call that ended
    # (its deadline, the server) between the read and a `done_writing` raised grpc.aio's
    # internal ExecuteBatchError; a write to a call already over raises InvalidStateError.
    try:
        await call.write(rpc.LeaseKeepAliveRequest(ID=lease))
        r = await call.read()
    except grpc.aio.AioRpcError as e:
        raise EtcdError(client.endpoint, e.code().name, e.details() or "") from e
    except asyncio.InvalidStateError as e:
        raise EtcdError(client.endpoint, "UNAVAILABLE", f"keepalive call over: {e}") from e
    finally:
        call.cancel()
    if r is grpc.aio.EOF:
        raise EtcdError(client.endpoint, "UNAVAILABLE", "keepalive stream closed")
    return int(r.TTL)


async def revoke(client: EtcdClient, lease: int) -> None:
    try:
        await _call(client, _lease(client).LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease))
    except EtcdError as e:
        if "requested lease not found" not in e.details:
            raise


async def claim(client: EtcdClient, key: bytes, value: bytes, lease: int,
                ) -> tuple[bool, Claim | None]:
    """Create `key` = `value` on `lease` unless it exists; (won, the claim now in force)."""
    req = rpc.TxnRequest(
        compare=[rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, key=key,
                             create_revision=0)],
        success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))],
        failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
    )
    r = await _call(client, client._kv.Txn, req)
    if r.succeeded:  # type: ignore[attr-defined]
        rev = int(r.header.revision)  # type: ignore[attr-defined]
        return True, Claim(value, rev, lease)
    kvs = r.responses[0].response_range.kvs  # type: ignore[attr-defined]
    if not kvs:
        return False, None
    return False, Claim(bytes(kvs[0].value), int(kvs[0].create_revision), int(kvs[0].lease))


async def still_holds(client: EtcdClient, key: bytes, held: Claim) -> bool:
    """The fence: one linearizable Txn that is true only while `held` is in force."""
    req = rpc.TxnRequest(compare=[
        rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, key=key,
                    create_revision=held.create_revision),
        rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.VALUE, key=key,
                    value=held.value),
    ])
    r = await _call(client, client._kv.Txn, req)
    return bool(r.succeeded)  # type: ignore[attr-defined]


async def current(client: EtcdClient, key: bytes) -> Claim | None:
    r = await _call(client, client._kv.Range, rpc.RangeRequest(key=key))
    kvs = r.kvs  # type: ignore[attr-defined]
    if not kvs:
        return None
    return Claim(bytes(kvs[0].value), int(kvs[0].create_revision), int(kvs[0].lease))

"""One module per operation; each op is a few idempotent, recorded steps.

`OPS` maps every op kind to its runner; each runner is bound to the op type
of its kind (ckeetcd.core.model.OP_TYPES), so it reads named fields, and an op of
another type is refused before any step runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from ckeetcd.core.kinds import OpKind
from ckeetcd.core.model import (
    OP_TYPES,
    AddMember,
    Compact,
    DefragMember,
    DisarmAlarm,
    EnsureRbac,
    MoveLeader,
    Op,
    PromoteMember,
    RemoveMember,
    RenewCerts,
    RotateCA,
    ServersFile,
    StartMember,
    StopMember,
)
from ckeetcd.ops import (
    add_member,
    apiserver_traffic,
    compact,
    defrag_member,
    disarm_alarm,
    ensure_rbac,
    move_leader,
    promote_member,
    remove_member,
    renew_certs,
    rotate_ca,
    start_member,
    stop_member,
)
from ckeetcd.ops.context import OpContext, OpFailed, Skip

OpFn = Callable[[OpContext, Op], Awaitable[None]]
T = TypeVar("T", bound=Op)


def _bound(kind: OpKind, cls: type[T], fn: Callable[[OpContext, T], Awaitable[None]]) -> OpFn:
    """`fn` as a runner of any Op: it refuses an op that is not a `cls`."""
    if OP_TYPES[kind] is not cls:
        raise TypeError(f"{kind!s} ops are {OP_TYPES[kind].__name__}, not {cls.__name__}")

    async def run(ctx: OpContext, op: Op) -> None:
        if not isinstance(op, cls):
            raise TypeError(f"{op.kind!s}: expected a {cls.__name__}, got {type(op).__name__}")
        await fn(ctx, op)

    return run


def _runners() -> dict[OpKind, OpFn]:
    return {
        OpKind.START_MEMBER: _bound(OpKind.START_MEMBER, StartMember, start_member.run),
        OpKind.RESTART_MEMBER: _bound(OpKind.RESTART_MEMBER, StartMember, start_member.run),
        OpKind.STOP_MEMBER: _bound(OpKind.STOP_MEMBER, StopMember, stop_member.run),
        OpKind.REMOVE_MEMBER: _bound(OpKind.REMOVE_MEMBER, RemoveMember, remove_member.run),
        OpKind.ADD_MEMBER: _bound(OpKind.ADD_MEMBER, AddMember, add_member.run),
        OpKind.PROMOTE_MEMBER: _bound(OpKind.PROMOTE_MEMBER, PromoteMember,
                                      promote_member.run),
        OpKind.ENSURE_RBAC: _bound(OpKind.ENSURE_RBAC, EnsureRbac, ensure_rbac.run),
        OpKind.RENEW_MEMBER_CERTS: _bound(OpKind.RENEW_MEMBER_CERTS, RenewCerts,
                                          renew_certs.run),
        OpKind.STOP_APISERVER_TRAFFIC: _bound(OpKind.STOP_APISERVER_TRAFFIC, ServersFile,
                                              apiserver_traffic.run),
        OpKind.PUBLISH_ENDPOINTS: _bound(OpKind.PUBLISH_ENDPOINTS, ServersFile,
                                         apiserver_traffic.run),
        OpKind.COMPACT: _bound(OpKind.COMPACT, Compact, compact.run),
        OpKind.ROTATE_CA: _bound(OpKind.ROTATE_CA, RotateCA, rotate_ca.run),
        OpKind.DEFRAG_MEMBER: _bound(OpKind.DEFRAG_MEMBER, DefragMember, defrag_member.run),
        OpKind.DISARM_ALARM: _bound(OpKind.DISARM_ALARM, DisarmAlarm, disarm_alarm.run),
        OpKind.MOVE_LEADER: _bound(OpKind.MOVE_LEADER, MoveLeader, move_leader.run),
    }


OPS: dict[OpKind, OpFn] = _runners()  # tests/test_optypes.py: one runner per kind

__all__ = ["OPS", "OpContext", "OpFailed", "Skip"]

"""Why an op that timed out may not be at fault: a raft election the plan or the
cluster explains (the runner adds it to the failed step's record)."""

from __future__ import annotations

from ckeetcd.core.kinds import OpKind
from ckeetcd.core.model import Observed, Op

TIMEOUT_CODES = frozenset({"DEADLINE_EXCEEDED", "UNAVAILABLE"})


def election_hint(observed: Observed, ops: tuple[Op, ...], failed: int, code: str) -> str:
    """Why op `failed` of `ops` may have timed out for no fault of its own: a raft
    election (etcd holds requests until it has a leader again). "" when the
    observation gives no such reason or the error was not a timeout.

    An operator seeing a bare DEADLINE_EXCEEDED would chase a fault that is not
    there; this says when the cycle's own plan or the cluster explains it.
    """
    if code not in TIMEOUT_CODES or observed.members is None:
        return ""
    names = {m.id: m.name or f"{m.id:x}" for m in observed.members}
    leader = observed.leader_id()
    if not leader:
        return ("no healthy member reported a raft leader when this cycle observed: an "
                "election was in progress; the op is decided again once it ends")
    stopped = [op for op in ops[:failed]
               if op.kind == OpKind.STOP_MEMBER and op.member_id == leader]
    if stopped or (ops[failed].kind == OpKind.REMOVE_MEMBER and ops[failed].member_id == leader):
        return (f"this plan took down the raft leader {names.get(leader, '?')}: an election "
                "was in progress; the op is decided again once it ends")
    seen = {h.leader_id for h in observed.health.values() if h.healthy and h.leader_id}
    if len(seen) > 1:
        return ("healthy members disagreed on the raft leader when this cycle observed: an "
                "election was in progress; the op is decided again once it ends")
    return ""

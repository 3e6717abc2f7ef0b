"""The one pure plan: (Desired, Observed, Standing) -> Decision, for this daemon.

`decide()` (the ladder) says what the cluster needs. `plan()` says what this
daemon does about it now, in one place:

1. its role, from what the election knows (`Standing`) and the quorum:
   no election -> single; quorum -> leader while it surely holds the lease,
   else follower; no quorum -> bootstrapper for the daemon named by
   `[daemon] bootstrapper` that holds the CA key, else follower;
2. the role rules: a follower keeps only node-local ops (the etcd servers
   file) and, without quorum, restarts of its own node's members;
3. the drift hold (ckeetcd.coordination.presence): a leader makes no membership change
   while a live daemon's config asks for other members, or before it has
   read theirs in this term (phase "config-drift");
4. its own invariants, checked on the result before it is returned (as
   Patroni's quorum resolver checks its own): a follower's ops are all
   allowed, a held decision has no membership op, at most one member-list
   change, and no op leaves fewer healthy voters than the quorum of the
   voters then. A plan that broke one runs nothing: phase "refused", and the
   reason names the rule (a bug to report, never a state to act in).

No I/O, no clock: the election reads its clock once, into `Standing.leading`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from ckeetcd.core.decide import decide
from ckeetcd.core.kinds import (
    MEMBER_LIST_CHANGES,
    MEMBERSHIP_OPS,
    NODE_LOCAL_OPS,
    SELF_HEAL_OP,
    OpKind,
    Phase,
    Role,
)
from ckeetcd.core.model import Decision, Desired, Observed, Op, quorum
from ckeetcd.core.rollplan import pending

Membership = tuple[tuple[str, str], ...]  # (name, peer URL) of each desired member, sorted


@dataclass(frozen=True)
class Standing:
    """What the election knows about this daemon when it plans (ckeetcd.coordination.election)."""

    elected: bool = False  # [daemon] election is on; False: the only daemon, acts alone
    leading: bool = False  # holds the leader key, its lease surely alive past one RPC
    bootstrapper: bool = False  # named by [daemon] bootstrapper, and holds the CA key
    own_members: frozenset[str] = frozenset()  # members whose address is this host's
    peers: Mapping[str, Membership] | None = None  # other daemons' asks; None: unread


ALONE = Standing()


def plan(desired: Desired, observed: Observed, standing: Standing = ALONE) -> Decision:
    """What this daemon runs now; `role` in the result says as what."""
    role = role_of(standing, observed)
    decision = for_role(decide(desired, observed), role, standing, observed,
                        membership(desired))
    broken = violations(decision, standing, observed, membership(desired), desired)
    if broken:
        ops = ", ".join(f"{op.kind}:{op.targets()}" for op in decision.ops)
        return Decision(Phase.REFUSED, (), f"plan refused, it breaks: {'; '.join(broken)} "
                                           f"(was {decision.phase}: {ops})", role)
    return decision


def role_of(standing: Standing, observed: Observed) -> Role:
    if not standing.elected:
        return Role.SINGLE
    if observed.has_quorum():
        return Role.LEADER if standing.leading else Role.FOLLOWER
    return Role.BOOTSTRAPPER if standing.bootstrapper else Role.FOLLOWER


def for_role(decision: Decision, role: Role, standing: Standing, observed: Observed,
             mine: Membership) -> Decision:
    """The part of `decision` a daemon in `role` may run."""
    if role == Role.FOLLOWER:
        quorate = observed.has_quorum()
        decision = replace(decision, ops=tuple(
            op for op in decision.ops if op.kind in NODE_LOCAL_OPS
            or self_heal(op, standing.own_members, quorate)))
    elif role == Role.LEADER:
        decision = hold_membership_changes(decision, mine, standing.peers)
    return replace(decision, role=role)


def self_heal(op: Op, own_members: frozenset[str], quorate: bool) -> bool:
    """A restart of this node's own member while there is no quorum to lead by."""
    return not quorate and op.kind == SELF_HEAL_OP and op.member in own_members


def membership(desired: Desired) -> Membership:
    """What daemons must agree on: (name, peer URL) of every desired member, sorted."""
    return tuple(sorted((m.name, m.peer_url) for m in desired.members))


def drift(mine: Membership, peers: Mapping[str, Membership] | None) -> str:
    """Why membership changes must wait ("" when every live daemon agrees)."""
    if peers is None:
        return "not yet read what the other daemons' configs ask for"
    differ = sorted(d for d, want in peers.items() if want != mine)
    if differ:
        return f"daemons {', '.join(differ)} ask for other members than this one"
    return ""


def hold_membership_changes(decision: Decision, mine: Membership,
                            peers: Mapping[str, Membership] | None) -> Decision:
    """`decision` without membership ops while live daemons disagree."""
    if not any(op.kind in MEMBERSHIP_OPS for op in decision.ops):
        return decision
    why = drift(mine, peers)
    if not why:
        return decision
    # A rolling step (stop, restart) is held whole: a restart without its stop is nothing.
    kept = () if decision.phase == Phase.ROLLING else tuple(
        op for op in decision.ops if op.kind not in MEMBERSHIP_OPS)
    return Decision(Phase.CONFIG_DRIFT, kept,
                    f"membership changes held: {why} (wanted: {decision.reason})",
                    decision.role)


def violations(decision: Decision, standing: Standing, observed: Observed,
               mine: Membership, desired: Desired | None = None) -> list[str]:
    """The plan's own invariants that `decision` breaks (empty: none)."""
    ops = decision.ops
    broken = []
    quorate = observed.has_quorum()
    if decision.role == Role.FOLLOWER and not all(
            op.kind in NODE_LOCAL_OPS or self_heal(op, standing.own_members, quorate)
            for op in ops):
        broken.append("a follower runs only node-local ops and its own restarts")
    if (decision.role == Role.LEADER and drift(mine, standing.peers)
            and any(op.kind in MEMBERSHIP_OPS for op in ops)):
        broken.append("no membership change while the daemons' configs disagree")
    if sum(op.kind in MEMBER_LIST_CHANGES for op in ops) > 1:
        broken.append("at most one member-list change")
    if quorate and (op := _quorum_breaker(observed, ops)) is not None:
        broken.append(f"quorum holds after every op ({op.kind}:{op.targets()} breaks it)")
    if desired is not None:
        broken += rolling_violations(decision, observed, desired)
    return broken


def rolling_violations(decision: Decision, observed: Observed, desired: Desired) -> list[str]:
    """A rolling change's rules: never more than one member down for it, never while
    any member is unhealthy, never the leader while another member waits, and
    leadership only to a healthy member that is changed already."""
    ops = decision.ops
    rolling = [op for op in ops if op.kind == OpKind.MOVE_LEADER or (
        decision.phase == Phase.ROLLING and op.kind in (OpKind.STOP_MEMBER,
                                                         OpKind.RESTART_MEMBER))]
    if not rolling:
        return []
    broken = []
    stops = [op for op in rolling if op.kind == OpKind.STOP_MEMBER]
    if len(stops) + sum(op.kind == OpKind.MOVE_LEADER for op in rolling) > 1:
        broken.append("at most one member down (or one leader move) per rolling step")
    if not observed.all_healthy():
        broken.append("no rolling change while any member is unhealthy")
    waiting = pending(desired, observed)
    leader = observed.leader_id()
    for op in stops:
        if op.member_id == leader and any(n != op.member for n in waiting):
            broken.append(f"the leader ({op.member}) restarts last, after every follower")
        if op.member not in waiting:
            broken.append(f"{op.member} runs what it should: no restart")
    for op in rolling:
        if op.kind == OpKind.MOVE_LEADER and (op.member in waiting or not any(
                m.id == op.member_id and observed.is_healthy(m)
                for m in observed.members or ())):
            broken.append(f"leadership moves only to a healthy, changed member, not "
                          f"{op.member}")
    return broken


def _quorum_breaker(observed: Observed, ops: tuple[Op, ...]) -> Op | None:
    """The first op after which healthy voters fall below the quorum of the voters."""
    voters = {m.id for m in observed.voters()}
    healthy = {m.id for m in observed.healthy_voters()}
    by_name = {m.name: m.id for m in observed.members or () if m.name}
    for op in ops:
        if op.kind == OpKind.STOP_MEMBER:
            healthy -= {op.member_id, by_name.get(op.member, 0)}
        elif op.kind == OpKind.REMOVE_MEMBER and op.member_id in voters:
            voters.discard(op.member_id)
            healthy.discard(op.member_id)
            if not voters:
                return op
        elif op.kind == OpKind.PROMOTE_MEMBER:
            voters.add(op.member_id)
            healthy.add(op.member_id)
        if len(healthy & voters) < quorum(len(voters)):
            return op
    return None

"""The pure decision ladder: (Desired, Observed) -> Decision.

Numbered rungs, checked in order; the first that applies returns. No I/O, no
clock, no memory of earlier cycles: the same snapshot always gives the same
ops, so a daemon killed between two steps simply decides again. This is the
cluster's whole plan; ckeetcd.core.planner.plan() makes it this daemon's (role
rules, drift hold, its own invariants checked), and is what the loop calls.

Invariants every returned op list keeps (tests/test_decide_properties.py):
  1. at most one membership change (one add-member or one remove-member, never
     both) and at most one learner: nothing is added while a learner exists;
  2. members are added as learners (add-member is always followed by the
     start-member of the same member) and promoted only once started, healthy
     and safe to count as a voter;
  3. a replacement runs stop-apiserver-traffic, stop-member, remove-member,
     then (later cycles) add-member, start-member, promote-member and
     publish-endpoints; the stop comes after the remove only when stopping a
     healthy voter first would itself break quorum;
  4. no op (stop, remove, promote) leaves fewer healthy voters than the quorum
     of the voting set it leaves behind (without quorum, no such op at all),
     and the last voter is never removed;
  5. no add-member and no start of a member outside the member list unless
     every member is healthy; restarting a stopped member still in the member
     list on its data, or starting one that never started, is always allowed
     (it restores health);
  6. the etcd servers file is never written empty and never lists a member
     that is unhealthy, a learner, leaving, or not in the config;
  7. a joining member's initial cluster names every member of the member list
     (etcd refuses to join when the count or the peer URLs differ);
  8. certificates are renewed in place, one member per decision, and only on
     running members of the list; a stopped member gets fresh ones from its
     (re)start;
  9. paused (config or `ckeetcd pause`) or a CORRUPT alarm: no ops at all;
 10. a member is defragmented only while every member is healthy (a member
     being defragmented blocks), each member at most once per decision, the
     leader last; NOSPACE is cleared by compact, defragment every member,
     then disarm-alarm, in that order, in one decision;
 11. no start, restart or add of a member whose restarts are held
     (`Runtime.held_until`, the back-off of ckeetcd.core.restarts): a member that
     keeps exiting is never started in a tight loop, whatever else holds.
     With nothing else to do the phase is "backoff" and the reason says
     until when.
 12. a rolling change (ckeetcd.core.rollplan) only once nothing else is to do
     and every member is healthy: one member down at most, the leader last
     (after move-leader), no member at all when the version change is refused.
     With a servers file, the member stopped (or the leader moved off) next is
     cut from it first, and kept out until its restart.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from ckeetcd.core.kinds import NODE_LOCAL_OPS, OpKind, Phase, Reason
from ckeetcd.core.model import (
    AddMember,
    Compact,
    Decision,
    DefragMember,
    Desired,
    DesiredMember,
    DisarmAlarm,
    EnsureRbac,
    LiveMember,
    MoveLeader,
    Observed,
    Op,
    PromoteMember,
    RemoveMember,
    RenewCerts,
    Runtime,
    ServersFile,
    StartMember,
    StopMember,
    quorum,
)
from ckeetcd.core.rollplan import held_out, pending, rolling_decision
from ckeetcd.core.rotationplan import rotation_step

TRAFFIC_STOP = OpKind.STOP_APISERVER_TRAFFIC
PUBLISH = OpKind.PUBLISH_ENDPOINTS
_UNREACHABLE = Runtime(reachable=False)


def decide(desired: Desired, observed: Observed) -> Decision:
    """The ladder, with apiserver traffic to unhealthy or leaving members cut first."""
    # 0. Hands off: a restore at work (from any node), a CORRUPT alarm (a human
    #    must look) or a pause switch.
    marked = sorted((name, r.restoring) for name, r in observed.runtimes.items() if r.restoring)
    if marked:
        names = ", ".join(n for n, _ in marked)
        return Decision(Phase.RESTORING, (), f"a restore is at work on {names} ({marked[0][1]}): "
                                         "hands off until it ends")
    if observed.has_alarm("CORRUPT"):
        ids = sorted({f"{i:x}" for i, a in observed.alarms if a == "CORRUPT"})
        return Decision(Phase.CORRUPT, (), f"CORRUPT alarm ({', '.join(ids)}): automatic changes "
                                       "stopped; check the members and disarm by hand")
    if desired.paused or observed.paused:
        why = "[daemon] paused = true" if desired.paused else observed.paused
        return Decision(Phase.PAUSED, (), f"paused ({why}): observing only")
    decision = _with_holds(observed, _ladder(desired, observed))
    if observed.members is None or any(op.kind in NODE_LOCAL_OPS
                                       for op in decision.ops):
        return decision
    traffic = _traffic_op(desired, observed, TRAFFIC_STOP)
    if traffic is None or set(traffic.endpoints) >= set(observed.published or ()):
        return decision
    if decision.phase == Phase.STEADY:  # only the servers file is off: it lists too much
        return Decision(Phase.PUBLISH, (traffic,), "etcd servers file lists members to cut")
    return Decision(decision.phase, (traffic, *decision.ops), decision.reason)


def _ladder(desired: Desired, observed: Observed) -> Decision:
    if observed.members is None:
        return _no_member_list(desired, observed)
    members = observed.members

    # 1. Restart stopped members that still hold their data: the only repair
    #    allowed whatever the health, since it restores health. Desired ones
    #    first; a leaving member only when that may bring quorum back.
    restarts = [_restart(members, _name(desired, m), m) for m in members
                if desired.by_peer_url(m.peer_url)
                and _can_restart(observed, _name(desired, m))]
    if not observed.has_quorum():
        restarts += [_restart(members, m.name, m) for m in members
                     if desired.by_peer_url(m.peer_url) is None and m.started
                     and not m.learner and _can_restart(observed, m.name)]
    if restarts:
        return Decision(Phase.REPAIR, tuple(restarts), "restart stopped members on their data")

    # 2. A desired voter that never started (a bootstrap member that missed the
    #    start, or one added out-of-band): start it on an empty data dir.
    for m in members:
        d = desired.by_peer_url(m.peer_url)
        if d and not m.started and not m.learner and _fresh(observed.runtime(d.name)):
            return Decision(Phase.REPAIR, (_start_existing(d, members),),
                            f"start voter {d.name} that is a member but never started")

    # 3. A running member whose certificates are missing, wrong or expiring gets
    #    new ones in place (no restart), one member per cycle. Before the quorum
    #    gate: expired peer certificates are one way to lose quorum.
    for m in members:
        d = desired.by_peer_url(m.peer_url)
        r = observed.runtime(d.name) if d else _UNREACHABLE
        if d and r.reachable and r.running and r.tls_problem:
            return Decision(Phase.CERTS, (
                RenewCerts(member=d.name, member_id=m.id, peer_url=d.peer_url,
                           client_url=d.client_url, problem=r.tls_problem),
            ), f"renew certificates of {d.name} in place: {r.tls_problem}")

    # 4. Without quorum nothing else is safe: wait for the operator or a restart.
    if not observed.has_quorum():
        return Decision(Phase.NO_QUORUM, (), "healthy voters below quorum; only restarts allowed")

    # 4b. NOSPACE: etcd takes only reads and deletes. Compact to the current
    #     revision, defragment every member one at a time (followers first, the
    #     leader last), then disarm; only while every member is healthy (a member
    #     being defragmented blocks). Otherwise the repairs below go first.
    nospace = observed.has_alarm("NOSPACE")
    if nospace and observed.all_healthy():
        defrags = tuple(_defrag(desired, m, Reason.NOSPACE) for m in _defrag_order(observed))
        return Decision(Phase.NOSPACE, (Compact(reason=Reason.NOSPACE), *defrags,
                                        DisarmAlarm(alarm="NOSPACE")),
                        "NOSPACE alarm: compact, defragment each member, disarm")

    # 5. RBAC once the cluster serves: root, kube-apiserver, auth on. Not while auth
    #    writes are held for a rolling upgrade across minors: the upgrade ends the hold.
    rolling_on = desired.rolling_changes and observed.auth_hold()
    if observed.rbac_ready is False and not (rolling_on and pending(desired, observed)):
        return Decision(Phase.RBAC, (EnsureRbac(),), "users, roles and auth")

    # 6. At most one learner: drop one the config does not name, else finish
    #    the learner (start, promote) or drop it when it stalls.
    learners = sorted(observed.learners(),
                      key=lambda m: desired.by_peer_url(m.peer_url) is not None)
    if learners:
        return _handle_learner(desired, observed, learners[0])

    # 7. Voters that must leave: not desired, or desired but wiped. Unhealthy
    #    ones first: removing them never costs a healthy vote.
    leaving = [m for m in members if desired.by_peer_url(m.peer_url) is None
               or _wiped(m, observed.runtime(_name(desired, m)))]
    leaving.sort(key=observed.is_healthy)
    for m in leaving:
        decision = _remove(desired, observed, m)
        if decision is not None:
            return decision

    # 8. Desired members not in the cluster: add one, as a learner, when all is
    #    well (this is also how the last voter gets replaced: add, then remove).
    missing = [d for d in desired.members if observed.live_by_peer_url(d.peer_url) is None]
    if missing:
        return _add(observed, missing[0])

    # 9. Publish healthy voters to kube-apiservers (cutting any is done by decide()).
    publish = _traffic_op(desired, observed, PUBLISH)
    if publish is not None and set(publish.endpoints) >= set(observed.published or ()):
        return Decision(Phase.PUBLISH, (publish,), "etcd servers file lacks healthy voters")

    if not observed.all_healthy():
        return Decision(Phase.DEGRADED, (), "some members unhealthy; waiting" + (
            " (NOSPACE alarm: defragmentation waits for every member)" if nospace else ""))

    # 9a. A CA rotation (`ckeetcd ca rotate`): its next step, one member at a time.
    rotating = rotation_step(desired, observed)
    if rotating is not None:
        return _traffic_off_before_stop(desired, observed, rotating)

    # 9b. A new etcd binary or changed member flags: one member at a time.
    rolling = rolling_decision(desired, observed)
    if rolling is not None:
        return _traffic_off_before_stop(desired, observed, rolling)

    # 10. Scheduled defragmentation: the most fragmented big database, one member
    #     per decision, followers before the leader.
    if desired.defrag_threshold > 0:
        due = [m for m in _defrag_order(observed)
               if (h := observed.health.get(m.id)) is not None
               and h.db_size >= desired.defrag_min_db_size
               and h.fragmentation > desired.defrag_threshold]
        if due:
            frag = observed.health[due[0].id].fragmentation
            return Decision(Phase.DEFRAG, (_defrag(desired, due[0], Reason.FRAGMENTED),),
                            f"{_name(desired, due[0])}: {frag:.0%} of its database is free")
    return Decision(Phase.STEADY)


# ---- rung helpers ----------------------------------------------------------
def _traffic_off_before_stop(desired: Desired, observed: Observed,
                             decision: Decision) -> Decision:
    """A member stopped for a restart (a rolling change, a CA rotation) leaves the etcd
    servers file first, as a leaving member does: kube-apiservers stop sending to it
    before it goes, and the stop drains first ([apiserver] drain_seconds) so that
    clients which re-read the file have moved off it. So does the leader before a
    move-leader (raft drops the proposals it gets while it hands over), and it stays
    out until its restart (rollplan.held_out). The publish rung puts it back once it
    is healthy again."""
    out = next((op for op in decision.ops if isinstance(op, StopMember | MoveLeader)), None)
    if out is None:
        return decision
    leaving = out.member_id if isinstance(out, StopMember) else observed.leader_id() or 0
    traffic = _traffic_op(desired, observed, TRAFFIC_STOP, exclude=leaving)
    if traffic is None:
        return decision
    ops = tuple(dataclasses.replace(op, drain=True) if op is out else op
                for op in decision.ops)
    return Decision(decision.phase, (traffic, *ops), decision.reason, decision.role)


def _with_holds(observed: Observed, decision: Decision) -> Decision:
    """Say which stopped members wait for their restart hold; "backoff" when idle."""
    held = sorted((r.held_until, n) for n, r in observed.runtimes.items()
                  if r.held_until and not r.running and r.reachable)
    if not held:
        return decision
    said = "; ".join(_hold(n, observed.runtime(n)) for _, n in held)
    reason = f"{said}; {decision.reason}" if decision.reason else said
    if decision.ops:
        return Decision(decision.phase, decision.ops, reason)
    return Decision(Phase.BACKOFF, (), reason)


def _hold(name: str, r: Runtime) -> str:
    until = dt.datetime.fromtimestamp(r.held_until, dt.timezone.utc)
    last = f", last: {r.last_exit}" if r.last_exit else ""
    return (f"{name}: restart in back-off until {until:%Y-%m-%dT%H:%M:%S}Z "
            f"({r.starts} start{'s' if r.starts != 1 else ''} without a healthy minute{last})")


def _defrag_order(observed: Observed) -> list[LiveMember]:
    """Members in list order, the leader moved last."""
    leader = observed.leader_id()
    return sorted(observed.members or (), key=lambda m: m.id == leader)


def _defrag(desired: Desired, m: LiveMember, why: Reason) -> Op:
    return DefragMember(member=_name(desired, m), member_id=m.id, peer_url=m.peer_url,
                        client_url=m.client_urls[0] if m.client_urls else "", reason=why)


def _no_member_list(desired: Desired, observed: Observed) -> Decision:
    """Nobody answered MemberList: bootstrap, restart, or wait."""
    runtimes = [observed.runtime(d.name) for d in desired.members]
    if not observed.formed:
        # Fresh members start only once every node answers; a member that has
        # data bootstrapped already, and starts on it whatever the others do.
        everyone = all(r.reachable for r in runtimes)
        initial = tuple((d.name, d.peer_url) for d in desired.members)
        ops = tuple(
            StartMember(kind=OpKind.START_MEMBER, member=d.name, peer_url=d.peer_url,
                        client_url=d.client_url, initial_cluster=initial, initial_state="new")
            for d, r in zip(desired.members, runtimes, strict=True)
            if r.reachable and not r.running and not r.held_until and (everyone or r.has_data)
        )
        why = "no member has formed a cluster yet"
        return Decision(Phase.BOOTSTRAP, ops, why if everyone else
                        f"{why}; waiting for every node to be reachable")
    restarts = tuple(
        StartMember(kind=OpKind.RESTART_MEMBER, member=d.name, peer_url=d.peer_url,
                    client_url=d.client_url,
                    initial_cluster=tuple((x.name, x.peer_url) for x in desired.members),
                    initial_state="existing")
        for d, r in zip(desired.members, runtimes, strict=True)
        if _can_restart_runtime(r)
    )
    if restarts:
        return Decision(Phase.NO_QUORUM, restarts, "no member answers; restart stopped members")
    return Decision(Phase.NO_QUORUM, (), "no member answers; waiting for the operator")


def _handle_learner(desired: Desired, observed: Observed, learner: LiveMember) -> Decision:
    d = desired.by_peer_url(learner.peer_url)
    name = _name(desired, learner)
    runtime = observed.runtime(name) if name else _UNREACHABLE
    age = observed.learner_ages.get(learner.id, 0.0)
    if d is None or age > desired.learner_timeout or _wiped(learner, runtime):
        why = ("not in the config" if d is None
               else "lost its data" if _wiped(learner, runtime) else "did not catch up in time")
        ops: list[Op] = [RemoveMember(member=name, member_id=learner.id,
                                      peer_url=learner.peer_url)]
        if name and runtime.reachable and (runtime.running or runtime.has_data):
            ops.append(StopMember(member=name, member_id=learner.id, archive_data=True))
        return Decision(Phase.MEMBER_REMOVE, tuple(ops),
                        f"learner {name or format(learner.id, 'x')} {why}")
    if not runtime.reachable:
        return Decision(Phase.MEMBER_ADD, (), f"learner {d.name}: node unreachable")
    if not runtime.running and runtime.held_until:
        return Decision(Phase.BACKOFF, (), f"learner {d.name} not started yet")
    if not runtime.running:
        return Decision(Phase.MEMBER_ADD, (_start_existing(d, observed.members or ()),),
                        f"start learner {d.name}")
    if not (learner.started and observed.is_healthy(learner)):
        return Decision(Phase.MEMBER_ADD, (), f"learner {d.name} starting")
    voters, healthy = len(observed.voters()), len(observed.healthy_voters())
    if healthy + 1 < quorum(voters + 1):
        return Decision(Phase.DEGRADED, (), f"promoting {d.name} now would break quorum")
    return Decision(Phase.PROMOTE, (
        PromoteMember(member=d.name, member_id=learner.id, peer_url=d.peer_url),
    ), f"promote learner {d.name}")


def _remove(desired: Desired, observed: Observed, m: LiveMember) -> Decision | None:
    """Ops that take voter `m` out of the cluster, or None when quorum forbids it now."""
    voters = observed.voters()
    healthy = observed.healthy_voters()
    if len(voters) <= 1:
        return None  # never remove the last member
    remaining_healthy = len(healthy) - (1 if m in healthy else 0)
    if remaining_healthy < quorum(len(voters) - 1):
        return None
    d = desired.by_peer_url(m.peer_url)
    name = _name(desired, m)
    runtime = observed.runtime(name) if name else _UNREACHABLE
    ops: list[Op] = []
    traffic = _traffic_op(desired, observed, TRAFFIC_STOP, exclude=m.id)
    if traffic is not None:
        ops.append(traffic)
    stop = StopMember(member=name, member_id=m.id, archive_data=True)
    remove = RemoveMember(member=name, member_id=m.id, peer_url=m.peer_url)
    # Stop before remove (the seed's order) unless stopping a healthy voter
    # first would itself break quorum of the current voting set.
    stopping_breaks_quorum = m in healthy and len(healthy) - 1 < quorum(len(voters))
    if not (runtime.reachable and (runtime.running or runtime.has_data)):
        ops.append(remove)  # nothing to stop, or no node to stop it on
    elif stopping_breaks_quorum:
        ops += [remove, stop]
    else:
        ops += [stop, remove]
    why = "wiped; re-add fresh" if d else "not in the config"
    return Decision(Phase.MEMBER_REMOVE, tuple(ops), f"member {name or format(m.id, 'x')} {why}")


def _add(observed: Observed, d: DesiredMember) -> Decision:
    if not observed.all_healthy():
        return Decision(Phase.DEGRADED, (), f"not adding {d.name} while members are unhealthy")
    runtime = observed.runtime(d.name)
    if not runtime.reachable:
        return Decision(Phase.MEMBER_ADD, (), f"not adding {d.name}: node unreachable")
    if runtime.held_until:  # the add would start it
        return Decision(Phase.BACKOFF, (), f"not adding {d.name} yet")
    ops: list[Op] = []
    if runtime.running or runtime.has_data:
        ops.append(StopMember(member=d.name, archive_data=True))
    ops.append(AddMember(member=d.name, peer_url=d.peer_url, client_url=d.client_url))
    ops.append(_start_existing(d, observed.members or ()))
    return Decision(Phase.MEMBER_ADD, tuple(ops), f"add {d.name} as a learner")


def _restart(members: tuple[LiveMember, ...], name: str, m: LiveMember) -> Op:
    return StartMember(kind=OpKind.RESTART_MEMBER, member=name, member_id=m.id,
                       peer_url=m.peer_url, client_url=m.client_urls[0] if m.client_urls else "",
                       initial_cluster=_initial_cluster(members), initial_state="existing")


def _start_existing(d: DesiredMember, members: tuple[LiveMember, ...]) -> Op:
    """Join `d` to the live cluster: its initial cluster is every member plus itself."""
    me = next((m for m in members if d.peer_url in m.peer_urls), None)
    initial = _initial_cluster(members, me.id if me else 0, d.name)
    if me is None:
        initial = (*initial, (d.name, d.peer_url))
    return StartMember(kind=OpKind.START_MEMBER, member=d.name, member_id=me.id if me else 0,
                       peer_url=d.peer_url, client_url=d.client_url,
                       initial_cluster=initial, initial_state="existing")


def _initial_cluster(members: tuple[LiveMember, ...], me: int = 0,
                     my_name: str = "") -> tuple[tuple[str, str], ...]:
    """name=peer_url for every member, unstarted ones and learners included."""
    return tuple(
        (my_name if m.id == me and my_name else m.name or f"member-{m.id:x}", url)
        for m in members
        for url in m.peer_urls
    )


def _name(desired: Desired, m: LiveMember) -> str:
    """The name the member's node is known by: the config's, else etcd's."""
    d = desired.by_peer_url(m.peer_url)
    return d.name if d else m.name


def _can_restart(observed: Observed, name: str) -> bool:
    return bool(name) and _can_restart_runtime(observed.runtime(name))


def _can_restart_runtime(r: Runtime) -> bool:
    return r.reachable and not r.running and r.has_data and not r.held_until


def _idle(r: Runtime) -> bool:
    return r.reachable and not r.running and not r.has_data


def _fresh(r: Runtime) -> bool:
    """Idle and free to start on an empty data dir now."""
    return _idle(r) and not r.held_until


def _wiped(m: LiveMember, r: Runtime) -> bool:
    """Started once, its node answers, no process and no data: it must be re-added."""
    return m.started and _idle(r)


def _traffic_target(desired: Desired, observed: Observed, exclude: int = 0) -> tuple[str, ...]:
    """Client URLs kube-apiservers should use: healthy desired voters, but not the one
    a rolling change takes out next once it is out of the file already."""
    out = held_out(desired, observed)
    urls = []
    for d in desired.members:
        m = observed.live_by_peer_url(d.peer_url)
        if m and m.id != exclude and not m.learner and observed.is_healthy(m) and not (
                m.id == out and d.client_url not in (observed.published or ())):
            urls.append(d.client_url)
    return tuple(urls)


def _traffic_op(desired: Desired, observed: Observed, kind: OpKind,
                exclude: int = 0) -> ServersFile | None:
    """The servers-file write that makes it list the healthy desired voters, if any differ."""
    if not desired.apiserver_file or observed.published is None:
        return None
    target = _traffic_target(desired, observed, exclude)
    if not target or set(target) == set(observed.published):
        return None
    return ServersFile(kind=kind, endpoints=target)

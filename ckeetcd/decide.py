"""The pure decision ladder: (Desired, Observed) -> Decision.

Numbered rungs, checked in order; the first that applies returns. No I/O, no
clock, no memory of earlier cycles: the same snapshot always gives the same
ops, so a daemon killed between two steps simply decides again.

Invariants every returned op list keeps (tests/test_decide_properties.py):
  1. at most one membership change (add or remove) and at most one learner;
  2. members are added as learners and promoted only once started;
  3. a replacement runs stop-apiserver-traffic, stop-member, remove-member,
     then (later cycles) add-member, start-member, promote-member;
  4. no removal or stop leaves fewer healthy voters than the quorum of the
     voting set it leaves behind, and the last voter is never removed;
  5. no add and no start of a new member unless every member is healthy;
     restarting a stopped member still in the member list is always allowed.
"""

from __future__ import annotations

from ckeetcd.model import Decision, Desired, DesiredMember, LiveMember, Observed, Op, quorum


def decide(desired: Desired, observed: Observed) -> Decision:
    """The ladder, with apiserver traffic to unhealthy or leaving members cut first."""
    decision = _ladder(desired, observed)
    if observed.members is None or (decision.ops and decision.ops[0].kind == TRAFFIC_STOP):
        return decision
    traffic = _traffic_op(desired, observed, TRAFFIC_STOP)
    if traffic is None or set(traffic.endpoints) >= set(observed.published or ()):
        return decision
    return Decision(decision.phase, (traffic, *decision.ops), decision.reason)


TRAFFIC_STOP = "stop-apiserver-traffic"


def _ladder(desired: Desired, observed: Observed) -> Decision:
    if observed.members is None:
        return _no_member_list(desired, observed)
    members = observed.members

    # 1. Restart stopped members that still hold their data: the only repair
    #    allowed whatever the health, since it restores health.
    restarts = tuple(
        Op("restart-member", member=m.name, member_id=m.id, peer_url=m.peer_url,
           client_url=m.client_urls[0] if m.client_urls else "",
           initial_cluster=_initial_cluster(members), initial_state="existing")
        for m in members
        if m.started and _can_restart(observed, m.name)
        # a leaving member is restarted only if that may bring quorum back
        and (desired.by_peer_url(m.peer_url) is not None or not observed.has_quorum())
    )
    if restarts:
        return Decision("repair", restarts, "restart stopped members on their data")

    # 2. A voter added out-of-band but never started: start it (restores health).
    for m in members:
        d = desired.by_peer_url(m.peer_url)
        if not m.started and not m.learner and d and _idle(observed, d.name):
            return Decision("repair", (_start_existing(d, members),),
                            f"start voter {d.name} that was added but never started")

    # 3. Without quorum nothing else is safe: wait for the operator or a restart.
    if not observed.has_quorum():
        return Decision("no-quorum", (), "healthy voters below quorum; only restarts allowed")

    # 4. RBAC once the cluster serves: root, kube-apiserver, auth on.
    if observed.rbac_ready is False:
        return Decision("rbac", (Op("ensure-rbac"),), "users, roles and auth")

    # 5. At most one learner: finish it (start, promote) or drop it.
    learners = observed.learners()
    if learners:
        return _handle_learner(desired, observed, learners[0])

    # 6. Members that must leave: not desired, or desired but wiped.
    leaving = [m for m in members if desired.by_peer_url(m.peer_url) is None]
    leaving += [m for m in members if desired.by_peer_url(m.peer_url) and _wiped(observed, m)]
    if leaving:
        decision = _remove(desired, observed, leaving[0])
        if decision is not None:
            return decision

    # 7. Desired members not in the cluster: add one, as a learner, when all is well.
    missing = [d for d in desired.members if observed.live_by_peer_url(d.peer_url) is None]
    if missing:
        return _add(desired, observed, missing[0])

    # 8. Publish healthy voters to kube-apiservers.
    publish = _traffic_op(desired, observed, "publish-endpoints")
    if publish is not None:
        return Decision("publish", (publish,), "etcd servers file differs from healthy voters")

    if not observed.all_healthy():
        return Decision("degraded", (), "some members unhealthy; waiting")
    return Decision("steady")


# ---- rung helpers ----------------------------------------------------------
def _no_member_list(desired: Desired, observed: Observed) -> Decision:
    """Nobody answered MemberList: bootstrap, restart, or wait."""
    runtimes = [observed.runtime(d.name) for d in desired.members]
    if not observed.formed:
        if any(not r.reachable for r in runtimes):
            return Decision("bootstrap", (), "waiting for every node to be reachable")
        initial = tuple((d.name, d.peer_url) for d in desired.members)
        ops = tuple(
            Op("start-member", member=d.name, peer_url=d.peer_url, client_url=d.client_url,
               initial_cluster=initial, initial_state="new")
            for d, r in zip(desired.members, runtimes, strict=True)
            if not r.running
        )
        return Decision("bootstrap", ops, "no member has formed a cluster yet")
    restarts = tuple(
        Op("restart-member", member=d.name, peer_url=d.peer_url, client_url=d.client_url,
           initial_cluster=tuple((x.name, x.peer_url) for x in desired.members),
           initial_state="existing")
        for d in desired.members
        if _can_restart(observed, d.name)
    )
    if restarts:
        return Decision("no-quorum", restarts, "no member answers; restart stopped members")
    return Decision("no-quorum", (), "no member answers; waiting for the operator")


def _handle_learner(desired: Desired, observed: Observed, learner: LiveMember) -> Decision:
    d = desired.by_peer_url(learner.peer_url)
    age = observed.learner_ages.get(learner.id, 0.0)
    if d is None or age > desired.learner_timeout or _wiped(observed, learner):
        why = "not desired" if d is None else "did not catch up in time"
        name = d.name if d else learner.name
        return Decision("member-remove", (
            Op("remove-member", member=name, member_id=learner.id, peer_url=learner.peer_url),
            Op("stop-member", member=name, member_id=learner.id, detail="archive-data"),
        ), f"learner {name or learner.id:x} {why}" if not name else f"learner {name} {why}")
    if not observed.runtime(d.name).running:
        if not observed.runtime(d.name).reachable:
            return Decision("member-add", (), f"learner {d.name}: node unreachable")
        members = observed.members or ()
        return Decision("member-add", (_start_existing(d, members),), f"start learner {d.name}")
    if observed.is_healthy(learner) or learner.started:
        return Decision("promote", (
            Op("promote-member", member=d.name, member_id=learner.id, peer_url=d.peer_url),
        ), f"promote learner {d.name}")
    return Decision("member-add", (), f"learner {d.name} starting")


def _remove(desired: Desired, observed: Observed, m: LiveMember) -> Decision | None:
    """Ops that take `m` out of the cluster, or None when quorum forbids it now."""
    voters = observed.voters()
    healthy = observed.healthy_voters()
    is_voter = not m.learner
    if is_voter and len(voters) <= 1:
        return None  # never remove the last member
    remaining_voters = len(voters) - (1 if is_voter else 0)
    remaining_healthy = len(healthy) - (1 if m in healthy else 0)
    if remaining_healthy < quorum(remaining_voters):
        return None
    d = desired.by_peer_url(m.peer_url)
    name = m.name or (d.name if d else "")
    runtime = observed.runtime(name)
    ops: list[Op] = []
    traffic = _traffic_op(desired, observed, TRAFFIC_STOP, exclude=m.id)
    if traffic is not None:
        ops.append(traffic)
    stop = Op("stop-member", member=name, member_id=m.id, detail="archive-data")
    remove = Op("remove-member", member=name, member_id=m.id, peer_url=m.peer_url)
    # Stop before remove (the seed's order) unless stopping a healthy voter
    # first would itself break quorum of the current voting set.
    stopping_breaks_quorum = m in healthy and len(healthy) - 1 < quorum(len(voters))
    if not runtime.reachable or not name:
        ops.append(remove)
    elif stopping_breaks_quorum:
        ops += [remove, stop]
    else:
        ops += [stop, remove]
    why = "wiped; re-add fresh" if d else "not in the config"
    return Decision("member-remove", tuple(ops), f"member {name or m.id} {why}")


def _add(desired: Desired, observed: Observed, d: DesiredMember) -> Decision:
    if not observed.all_healthy():
        return Decision("degraded", (), f"not adding {d.name} while members are unhealthy")
    runtime = observed.runtime(d.name)
    if not runtime.reachable:
        return Decision("member-add", (), f"not adding {d.name}: node unreachable")
    ops: list[Op] = []
    if runtime.running or runtime.has_data:
        ops.append(Op("stop-member", member=d.name, detail="archive-data"))
    members = observed.members or ()
    ops.append(Op("add-member", member=d.name, peer_url=d.peer_url, client_url=d.client_url))
    ops.append(_start_existing(d, members))
    return Decision("member-add", tuple(ops), f"add {d.name} as a learner")


def _start_existing(d: DesiredMember, members: tuple[LiveMember, ...]) -> Op:
    initial = tuple((m.name, m.peer_url) for m in members if m.started and m.peer_url != d.peer_url)
    return Op("start-member", member=d.name, peer_url=d.peer_url, client_url=d.client_url,
              initial_cluster=(*initial, (d.name, d.peer_url)), initial_state="existing")


def _initial_cluster(members: tuple[LiveMember, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((m.name, m.peer_url) for m in members if m.started)


def _can_restart(observed: Observed, name: str) -> bool:
    r = observed.runtime(name)
    return r.reachable and not r.running and r.has_data


def _idle(observed: Observed, name: str) -> bool:
    r = observed.runtime(name)
    return r.reachable and not r.running


def _wiped(observed: Observed, m: LiveMember) -> bool:
    """Started once, its node answers, no process and no data: it must be re-added."""
    r = observed.runtime(m.name)
    return m.started and r.reachable and not r.running and not r.has_data


def _traffic_target(desired: Desired, observed: Observed, exclude: int = 0) -> tuple[str, ...]:
    """Client URLs kube-apiservers should use: healthy desired voters."""
    urls = []
    for d in desired.members:
        m = observed.live_by_peer_url(d.peer_url)
        if m and m.id != exclude and not m.learner and observed.is_healthy(m):
            urls.append(d.client_url)
    return tuple(urls)


def _traffic_op(desired: Desired, observed: Observed, kind: str, exclude: int = 0) -> Op | None:
    if not desired.apiserver_file or observed.published is None:
        return None
    target = _traffic_target(desired, observed, exclude)
    if not target or target == observed.published:
        return None
    return Op(kind, endpoints=target)


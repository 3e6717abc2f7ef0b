"""Property tests for plan(): invariants over random states, and interrupted plans.

Everything runs on the output of the one planning function (ckeetcd.core.planner.plan),
for random standings too: single, leader, follower and bootstrapper roles, and
drift between the daemons' configs.

1. For random (often inconsistent) desired/observed pairs and standings, every
   decision keeps the safety rules and the role and drift rules
   (`check_decision` below spells them out one by one).
2. From random recoverable states of a simulated cluster (tests/sim.py), the
   daemon decides, runs only a random prefix of the ops (it was killed between
   steps), and decides again: it must reach exactly the desired members as
   healthy voters, without ever breaking quorum once quorum was there, and
   without ever having two learners; meanwhile leadership lapses for some
   rounds, another daemon's config drifts for a while, and a follower daemon
   plans and runs its own share on the same cluster.
3. Alarms, pause and defragmentation: paused or CORRUPT means no op at all; a
   member is defragmented only while every member is healthy (so never while
   another one is down or being defragmented), once per decision, the leader
   last; NOSPACE is cleared by compact, every member, disarm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from types import MappingProxyType

from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st

from ckeetcd.core.kinds import (
    MEMBER_LIST_CHANGES,
    MEMBERSHIP_OPS,
    NODE_LOCAL_OPS,
    OpKind,
    Phase,
    Role,
)
from ckeetcd.core.memberchange import member_change
from ckeetcd.core.model import (
    Decision,
    Desired,
    Health,
    LiveMember,
    Observed,
    Op,
    Runtime,
    StartMember,
    quorum,
)
from ckeetcd.core.planner import ALONE, Membership, Standing, membership, plan
from tests.builders import (
    DEAD,
    HEALTHY,
    UNREACHABLE,
    WIPED,
    client_url,
    cluster,
    desired,
    live,
    peer_url,
)
from tests.hypothesis_tiers import examples
from tests.sim import Member, Node, OpFailed, World

NAMES = [f"m{i}" for i in range(1, 8)]
EXTRAS = ["x8", "x9"]
POOL = NAMES + EXTRAS
KINDS = set(OpKind)  # tests/test_optypes.py pins their strings
PHASES = set(Phase) - {Phase.RESTORING, Phase.REFUSED}  # no restore marker drawn; never refused
MAINTENANCE = {OpKind.COMPACT, OpKind.DEFRAG_MEMBER, OpKind.DISARM_ALARM}
CHANGES = MEMBER_LIST_CHANGES
TRAFFIC = NODE_LOCAL_OPS

FAST = settings(max_examples=examples(1000), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def often(p: int = 7) -> st.SearchStrategy[bool]:
    """True with probability about p/10 (integers() would favour the bounds)."""
    return st.sampled_from([False] * (10 - p) + [True] * p)


# ---- random observed states ---------------------------------------------------
HELD = 1.8e9  # a restart hold (back-off) until some time ahead
RUNTIMES = st.sampled_from([HEALTHY, DEAD, WIPED, UNREACHABLE, replace(DEAD, held_until=HELD),
                            replace(WIPED, held_until=HELD)]) | st.builds(
    Runtime, reachable=st.booleans(), running=st.booleans(), has_data=st.booleans(),
    tls_problem=st.sampled_from(["", "", "missing", "expires in 10s"]),
    held_until=st.sampled_from([0.0, 0.0, 0.0, HELD]))


@st.composite
def raw_states(draw: st.DrawFn) -> tuple[Desired, Observed]:
    """Anything at all, consistent or not (health without a process, and so on)."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=7, unique=True))
    d = desired(names, apiserver_file=draw(st.booleans()), learner_timeout=60.0)
    listed = draw(st.lists(st.sampled_from(POOL), max_size=8, unique=True))
    members: list[LiveMember] = []
    health: dict[int, Health] = {}
    runtimes: dict[str, Runtime] = {}
    ages: dict[int, float] = {}
    for n in listed:
        started = draw(often(8))
        m = live(n, learner=draw(often(2)), started=started, bootstrap=draw(st.booleans()))
        members.append(m)
        ok = started and draw(often(7))
        health[m.id] = Health(healthy=ok, member_id=m.id if ok else 0, learner=m.learner)
        if draw(often(8)):  # mostly consistent: healthy members run on their data
            runtimes[n] = HEALTHY if ok else draw(st.sampled_from([DEAD, WIPED, UNREACHABLE,
                                                                   HEALTHY]))
        if m.learner:
            ages[m.id] = draw(AGES)
    for n in POOL:
        if n not in runtimes and draw(often(8)):
            runtimes[n] = draw(RUNTIMES)
    no_list = draw(often(2))
    published = draw(st.none() | st.lists(st.sampled_from(POOL), unique=True))
    o = Observed(
        members=None if no_list else tuple(members),
        health=health,
        runtimes=runtimes,
        rbac_ready=draw(st.sampled_from([True, True, False, None])),
        learner_ages=ages,
        formed=draw(st.booleans()),
        published=None if published is None else tuple(client_url(n) for n in published),
    )
    return d, o


AGES = st.sampled_from([0.0, 5.0, 59.0, 61.0, 600.0])
CONDITIONS = ["healthy"] * 5 + ["dead", "wiped", "unreachable", "hung"]  # [5:]: faults


@st.composite
def cluster_states(draw: st.DrawFn) -> tuple[Desired, Observed]:
    """Consistent snapshots, built with tests.builders.cluster: what observe can see."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=7, unique=True))
    d = desired(names, apiserver_file=draw(st.booleans()), learner_timeout=60.0)
    in_list = draw(st.lists(st.sampled_from(names), unique=True,
                           min_size=max(1, len(names) // 2)))
    others = [n for n in POOL if n not in names]
    n_extra = draw(st.sampled_from([0, 0, 0, 1, 2]))
    extra = draw(st.lists(st.sampled_from(others), min_size=n_extra, max_size=n_extra,
                          unique=True))
    listed = [*in_list, *extra]
    cond: dict[str, list[str]] = {c: [] for c in CONDITIONS}
    unstarted: list[str] = []
    boot: list[str] = []
    n_faults = min(len(listed), draw(st.sampled_from([0, 0, 1, 1, 1, 2])))
    faulty = draw(st.lists(st.sampled_from(listed), min_size=n_faults, max_size=n_faults,
                           unique=True))
    voters = [n for n in listed if n not in faulty]
    for n in faulty:
        c = draw(st.sampled_from([*CONDITIONS[5:], "unstarted"]))
        if c == "unstarted" and voters:
            (boot if draw(st.booleans()) else unstarted).append(n)
        else:
            voters.append(n)
            cond["dead" if c == "unstarted" else c].append(n)
    free = [n for n in POOL if n not in listed]
    wanted = [n for n in free if n in names]  # a learner is usually a desired member
    pick = wanted if wanted and draw(often(8)) else free
    learner = draw(st.sampled_from(pick)) if pick and draw(often(4)) else None
    more: list[str] = []
    if learner is not None:
        rest = [n for n in free if n != learner]
        if rest and draw(often(1)):
            more = [draw(st.sampled_from(rest))]
    for n in POOL:
        if n not in listed and n != learner and n not in more and draw(often(3)):
            cond[draw(st.sampled_from(["dead", "wiped", "unreachable", "hung"]))].append(n)
    learner_started = draw(st.booleans())
    bad_certs = draw(st.lists(st.sampled_from(POOL), max_size=2, unique=True)
                     if draw(often(2)) else st.just([]))
    o = cluster(
        voters, dead=cond["dead"], wiped=cond["wiped"], unreachable=cond["unreachable"],
        hung=cond["hung"], idle=[n for n in names if n not in listed],
        unstarted=unstarted, bootstrap_unstarted=boot,
        learner=learner, learner_started=learner_started,
        learner_running=draw(st.none() | st.booleans()),
        learner_healthy=draw(st.none() | st.booleans()) if learner_started else False,
        learner_age=draw(AGES), learners=more,
        not_formed=draw(often(1)), no_member_list=draw(often(1)),
        published=draw(st.none() | st.lists(st.sampled_from(POOL), unique=True)),
        rbac_ready=draw(st.sampled_from([True, True, True, False, None])),
    )
    runtimes = {n: replace(r, tls_problem="expiring") if n in bad_certs and r.reachable else r
                for n, r in o.runtimes.items()}
    return d, replace(o, runtimes=MappingProxyType(runtimes))


@st.composite
def change_states(draw: st.DrawFn) -> tuple[Desired, Observed]:
    """A healthy-ish cluster in the middle of one config change (add, remove, swap),
    possibly with its learner at some stage and one fault somewhere."""
    voters = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    free = [n for n in POOL if n not in voters]
    change = draw(st.sampled_from(["none", "add", "add two", "remove", "swap"]))
    newcomer, second = draw(st.lists(st.sampled_from(free), min_size=2, max_size=2,
                                     unique=True))
    names = list(voters)
    if change in ("remove", "swap") and len(names) > 1:
        names.remove(draw(st.sampled_from(names)))
    if change in ("add", "add two", "swap"):
        names.append(newcomer)
    if change == "add two":
        names.append(second)
    stage = draw(st.sampled_from(["none", "unstarted", "running", "started", "sick"]))
    learner = newcomer if change in ("add", "add two", "swap") and stage != "none" else None
    fault = draw(st.sampled_from(["none", "none", "dead", "wiped", "unreachable", "hung"]))
    faulty = draw(st.sampled_from(voters)) if fault != "none" else ""
    o = cluster(
        voters, learner=learner, learner_started=stage in ("started", "sick"),
        learner_running=stage in ("running", "started", "sick"),
        learner_healthy=stage == "started", learner_age=draw(AGES),
        idle=[second] if learner else [newcomer, second],
        dead=[faulty] if fault == "dead" else [], wiped=[faulty] if fault == "wiped" else [],
        unreachable=[faulty] if fault == "unreachable" else [],
        hung=[faulty] if fault == "hung" else [],
        published=draw(st.none() | st.just(voters) | st.just(names)),
    )
    return desired(names, apiserver_file=draw(st.booleans())), o


VERSIONS = ["", "3.5.30", "3.5.30", "3.5.16", "3.4.23", "3.6.0"]


@st.composite
def with_extras(draw: st.DrawFn, base: st.SearchStrategy[tuple[Desired, Observed]]
                ) -> tuple[Desired, Observed]:
    """`base` plus alarms, a pause switch, database sizes and scheduled defragmentation."""
    d, o = draw(base)
    ids = [m.id for m in o.members or ()] or [0]
    alarms = draw(st.lists(st.tuples(st.sampled_from([0, *ids]),
                                     st.sampled_from(["NOSPACE", "NOSPACE", "CORRUPT"])),
                           max_size=2, unique=True) if draw(often(5)) else st.just([]))
    health = dict(o.health)
    for i, h in list(health.items()):
        if draw(often(6)):
            size = draw(st.sampled_from([0, 50, 1000, 10**9]))
            health[i] = replace(h, db_size=size,
                                db_size_in_use=int(size * draw(st.sampled_from(
                                    [0.0, 0.1, 0.5, 0.51, 0.9, 1.0]))))
    runtimes = dict(o.runtimes)
    if draw(often(3)):  # a rolling change: new binaries and/or flags on some members
        for i, h in list(health.items()):
            health[i] = replace(h, version=draw(st.sampled_from(VERSIONS)))
        for n, r in list(runtimes.items()):
            runtimes[n] = replace(r, wanted_version=draw(st.sampled_from(VERSIONS)),
                                  flag_change=draw(st.sampled_from(
                                      [(), (), ("--heartbeat-interval=100 -> "
                                                "--heartbeat-interval=150",)])))
    o = replace(o, runtimes=MappingProxyType(runtimes))
    d = replace(d, paused=draw(often(1)),
                defrag_threshold=draw(st.sampled_from([0.0, 0.3, 0.5, 0.9])),
                defrag_min_db_size=draw(st.sampled_from([0, 100, 10**6])))
    return d, replace(o, alarms=tuple(alarms), health=MappingProxyType(health),
                      paused=draw(st.sampled_from(["", "", "", "", "ckeetcd pause"])))


@st.composite
def settled_states(draw: st.DrawFn) -> tuple[Desired, Observed]:
    """A settled cluster, at most one fault: where defragmentation gets decided."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    fault = draw(st.sampled_from(["none", "none", "none", "dead", "hung", "learner"]))
    faulty = draw(st.sampled_from(names))
    o = cluster(names, dead=[faulty] if fault == "dead" else [],
                hung=[faulty] if fault == "hung" else [],
                learner="x9" if fault == "learner" else None, learner_started=True)
    return desired(names), o


states = st.one_of(cluster_states(), change_states(), raw_states(),
                   with_extras(st.one_of(cluster_states(), change_states(), raw_states())),
                   with_extras(settled_states()))


# ---- random standings (what the election knows when the daemon plans) ----------
@st.composite
def standings(draw: st.DrawFn, d: Desired) -> Standing:
    """Any role: alone, leading or not, the bootstrapper or not, with the other
    daemons agreeing, drifting, or not read yet."""
    if draw(often(3)):
        return ALONE
    mine = membership(d)
    stale = membership(desired(draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=4,
                                             unique=True))))
    peers = draw(st.sampled_from([None, {}, {"b": mine}, {"b": mine, "c": stale}]))
    return Standing(elected=True, leading=draw(st.booleans()),
                    bootstrapper=draw(st.booleans()), peers=peers,
                    own_members=frozenset(draw(st.lists(st.sampled_from(POOL), max_size=2))))


def role_rule(s: Standing, o: Observed) -> Role:
    """Who may act, spelled out apart from the planner's own code."""
    if not s.elected:
        return Role.SINGLE
    if o.voters() and len(o.healthy_voters()) >= quorum(len(o.voters())):
        return Role.LEADER if s.leading else Role.FOLLOWER
    return Role.BOOTSTRAPPER if s.bootstrapper else Role.FOLLOWER


def _drifts(mine: Membership, s: Standing) -> bool:
    return s.peers is None or any(want != mine for want in s.peers.values())


def check_roles(d: Desired, o: Observed, dec: Decision, s: Standing) -> None:
    """The role and drift rules: a follower runs only its node's share, a leader
    makes no membership change while the daemons' configs disagree."""
    assert dec.role == role_rule(s, o)
    kinds = [op.kind for op in dec.ops]
    if dec.role == Role.FOLLOWER:
        for op in dec.ops:
            assert op.kind in TRAFFIC or (
                op.kind == OpKind.RESTART_MEMBER and op.member in s.own_members
                and not o.has_quorum()), f"a follower runs {op.kind}:{op.targets()}"
    if dec.role == Role.LEADER and _drifts(membership(d), s):
        assert not set(kinds) & MEMBERSHIP_OPS, kinds
    if dec.phase == Phase.CONFIG_DRIFT:
        assert dec.role == Role.LEADER and _drifts(membership(d), s)
        assert "membership changes held" in dec.reason
    alone = plan(d, o)
    if dec.role in (Role.SINGLE, Role.BOOTSTRAPPER):
        assert dec.ops == alone.ops and dec.phase == alone.phase
    else:  # any role only ever drops ops of the whole plan, in their order
        kept = iter(alone.ops)
        assert all(op in kept for op in dec.ops), "an op the cluster's plan does not have"


def check_decision(d: Desired, o: Observed, dec: Decision, s: Standing = ALONE) -> None:
    """Every safety rule a single decision must keep, whatever the snapshot and role."""
    ops = dec.ops
    kinds = [op.kind for op in ops]
    assert set(kinds) <= KINDS, kinds
    assert dec.phase in PHASES, dec
    check_roles(d, o, dec, s)
    assert dec.phase != "steady" or not ops
    assert len(set(ops)) == len(ops), "duplicate op"
    # Rule 1: at most one membership change (add, remove or promote), never two.
    assert sum(k in CHANGES for k in kinds) <= 1, kinds
    assert sum(k in TRAFFIC for k in kinds) <= 1, kinds
    assert kinds.count("renew-member-certs") <= 1, "certificates renewed on two members"
    assert plan(d, o, s) == dec, "not deterministic"
    # Rule 9: hands off while paused or after a CORRUPT alarm.
    if o.has_alarm("CORRUPT"):
        assert dec.phase == "corrupt" and not ops
    elif d.paused or o.paused:
        assert dec.phase == "paused" and not ops
    _check_maintenance(d, o, dec)
    # Rule 11: a member whose restarts are held is not started, restarted or added.
    for op in ops:
        if op.kind in ("start-member", "restart-member", "add-member"):
            assert not o.runtime(op.member).held_until, f"{op.kind} of held {op.member}"
    if dec.phase == "backoff":
        assert set(kinds) <= TRAFFIC and any(r.held_until for r in o.runtimes.values())

    if o.members is None:
        _check_no_member_list(d, o, ops)
        return
    members = o.members
    by_id = {m.id: m for m in members}
    by_peer = {m.peer_url: m for m in members}
    voters = {m.id for m in o.voters()}
    healthy_voters = {m.id for m in o.healthy_voters()}
    removed = {op.member_id for op in ops if op.kind == "remove-member"}
    stopped = {op.member for op in ops if op.kind == "stop-member"}
    has_quorum = o.has_quorum()

    # Rule 5: without quorum only the repairs that restore it (and cutting traffic).
    if not has_quorum:
        assert set(kinds) <= {"restart-member", "start-member", "stop-apiserver-traffic",
                              "renew-member-certs"}, kinds

    for i, op in enumerate(ops):
        before, after = ops[:i], ops[i + 1:]
        if op.kind in TRAFFIC:
            _check_traffic(d, o, op, i, removed, stopped)
        elif op.kind == "renew-member-certs":
            m = by_id.get(op.member_id)
            dm = d.by_name(op.member)
            assert m is not None and dm is not None and dm.peer_url == m.peer_url
            r = o.runtime(op.member)
            assert r.reachable and r.running and r.tls_problem and op.problem == r.tls_problem
            assert op.client_url == dm.client_url
        elif op.kind == "ensure-rbac":
            assert o.rbac_ready is False and has_quorum
        elif op.kind == "restart-member" and any(
                b.kind == "stop-member" and not b.archive_data and b.member == op.member
                for b in before):
            pass  # a rolling restart: _check_rolling
        elif op.kind == "restart-member":
            m = by_id.get(op.member_id)
            assert m is not None and m.peer_url == op.peer_url
            dm = d.by_peer_url(m.peer_url)
            if dm is None:  # a leaving member is restarted only to bring quorum back
                assert not has_quorum and m.started and m.name == op.member
            else:
                assert dm.name == op.member
            r = o.runtime(op.member)
            assert r.reachable and not r.running and r.has_data
            assert op.initial_state == "existing"
        elif op.kind == "start-member":
            _check_join(d, o, op, before)
        elif op.kind == "add-member":
            # Rules 1, 2, 5: a learner, one at a time, only when all is healthy.
            assert not o.learners() and o.all_healthy() and has_quorum
            dm = d.by_name(op.member)
            assert dm is not None and dm.peer_url == op.peer_url and op.peer_url not in by_peer
            assert after and after[0].kind == "start-member" and after[0].member == op.member
            assert all(b.kind in TRAFFIC or (b.kind == "stop-member" and b.member == op.member)
                       for b in before)
        elif op.kind == "promote-member":
            m = by_id.get(op.member_id)
            assert m is not None and m.learner and m.started and o.is_healthy(m)
            assert d.by_peer_url(m.peer_url) is not None
            assert len(healthy_voters) + 1 >= quorum(len(voters) + 1)
        elif op.kind == "remove-member":
            m = by_id.get(op.member_id)
            assert m is not None, "removing a non-member"
            dm = d.by_peer_url(m.peer_url)
            r = o.runtime(op.member) if op.member else UNREACHABLE
            if r.reachable and r.running:  # rule 3: stop its etcd if the node answers
                assert op.member in stopped, "a running member removed without a stop"
            if not m.learner:
                assert len(voters) >= 2, "removing the last voter"
                # a desired voter leaves only when its data is gone
                assert dm is None or (m.started and _idle(o.runtime(dm.name)))
            elif dm is not None:
                r = o.runtime(dm.name)
                assert (o.learner_ages.get(m.id, 0.0) > d.learner_timeout
                        or (m.started and _idle(r)))
        elif op.kind == "stop-member" and not op.archive_data:
            pass  # a rolling restart: _check_rolling
        elif op.kind == "stop-member":
            assert op.member, "stop-member without a node"
            r = o.runtime(op.member)
            assert r.reachable
            assert op.archive_data
            leaving = [x for x in ops if x.kind == "remove-member" and x.member == op.member]
            joining = [x for x in after if x.kind == "add-member" and x.member == op.member]
            assert leaving or joining, "a stop that neither removes nor re-adds"
            if joining:
                assert d.by_name(op.member) is not None
                assert peer_url(op.member) not in by_peer

    _check_rolling(d, o, dec)
    _check_quorum_walk(o, ops)
    _check_servers_file_after(d, o, ops)
    for op in ops:  # a learner that stalled is never started or promoted again
        m = by_id.get(op.member_id) or by_peer.get(op.peer_url)
        if op.kind in ("start-member", "promote-member") and m is not None and m.learner:
            assert o.learner_ages.get(m.id, 0.0) <= d.learner_timeout, "stalled learner kept"


def _check_rolling(d: Desired, o: Observed, dec: Decision) -> None:
    """Rule 12: a rolling change never takes down more than one member, never while any
    member is unhealthy, never the leader while a follower waits, never when refused."""
    def name(m: LiveMember) -> str:
        dm = d.by_peer_url(m.peer_url)
        return dm.name if dm else m.name

    waiting = {name(m) for m in o.members or ()
               if member_change(o.runtime(name(m)), o.health.get(m.id))}
    stops = [op for op in dec.ops if op.kind == "stop-member" and not op.archive_data]
    moves = [op for op in dec.ops if op.kind == "move-leader"]
    if dec.phase == "upgrade-refused":
        assert all(op.kind in TRAFFIC for op in dec.ops) and waiting
    if not stops and not moves:
        return
    assert dec.phase == "rolling", dec
    assert o.all_healthy(), "a rolling step while a member is unhealthy"
    assert not o.learners()
    assert len(stops) + len(moves) == 1, "more than one member down (or moved) at once"
    leader = o.leader_id()
    if stops:
        stop = stops[0]
        assert stop.member in waiting, f"{stop.member} restarted for nothing"
        assert [(op.kind, op.member) for op in dec.ops] == [
            ("stop-member", stop.member), ("restart-member", stop.member)]
        if stop.member_id == leader:
            assert waiting == {stop.member}, "the leader restarted while a follower waits"
        assert stop.pre_snapshot and stop.snapshot_tag, "a rolling stop without a snapshot"
    for mv in moves:
        target = next(m for m in o.members or () if m.id == mv.member_id)
        assert o.is_healthy(target) and name(target) not in waiting and target.id != leader
        assert {name(m) for m in o.members or () if m.id == leader} == waiting, \
            "leadership moves only when the leader is the last to change"


def _check_maintenance(d: Desired, o: Observed, dec: Decision) -> None:
    """Rule 10: compaction, defragmentation and disarming."""
    ops = [op for op in dec.ops if op.kind in MAINTENANCE]
    if not ops:
        return
    kinds = [op.kind for op in dec.ops]
    # Never defragment while another member is unhealthy (or blocked in its own
    # defragmentation: it would not answer), never without quorum.
    assert o.members is not None and o.has_quorum() and o.all_healthy()
    assert not o.has_alarm("CORRUPT") and not d.paused and not o.paused
    defrags = [op for op in ops if op.kind == "defrag-member"]
    by_id = {m.id: m for m in o.members}
    assert len({op.member_id for op in defrags}) == len(defrags), "a member defragmented twice"
    for op in defrags:
        m = by_id.get(op.member_id)
        assert m is not None and o.is_healthy(m) and op.client_url in m.client_urls
    leader = o.leader_id()
    if any(op.member_id == leader for op in defrags):
        assert defrags[-1].member_id == leader, "the leader is defragmented last"
    if "compact" in kinds or "disarm-alarm" in kinds:
        # NOSPACE: compact, every member once (the leader last), disarm; nothing else
        assert o.has_alarm("NOSPACE") and dec.phase == "nospace"
        assert [k for k in kinds if k not in TRAFFIC] == (
            ["compact"] + ["defrag-member"] * len(o.members) + ["disarm-alarm"]), kinds
        assert {op.member_id for op in defrags} == set(by_id)
    else:
        # scheduled: one fragmented member per decision, above the configured share
        assert kinds == ["defrag-member"] and dec.phase == "defrag"
        h = o.health[defrags[0].member_id]
        assert d.defrag_threshold > 0 and h.fragmentation > d.defrag_threshold
        assert h.db_size >= d.defrag_min_db_size
        assert not o.has_alarm("NOSPACE")
        followers_due = [m for m in o.members if m.id != leader
                         and o.health[m.id].fragmentation > d.defrag_threshold
                         and o.health[m.id].db_size >= d.defrag_min_db_size]
        assert defrags[0].member_id != leader or not followers_due, "leader before followers"


def _check_servers_file_after(d: Desired, o: Observed, ops: Sequence[Op]) -> None:
    """Liveness of the contract: once the decision ran, the servers file lists no
    member that is unhealthy, a learner, leaving or unknown (unless it can't be
    written because no healthy member is left to list)."""
    if not d.apiserver_file or o.published is None or o.members is None:
        return
    if d.paused or o.paused or o.has_alarm("CORRUPT"):
        return  # hands off: the file is left as it is
    healthy = {dm.client_url for dm in d.members
               for m in [o.live_by_peer_url(dm.peer_url)]
               if m is not None and not m.learner and o.is_healthy(m)}
    written = [op.endpoints for op in ops if op.kind in TRAFFIC]
    after = set(written[-1]) if written else set(o.published)
    if healthy:
        assert after <= healthy, f"servers file keeps {sorted(after - healthy)}"


def _idle(r: Runtime) -> bool:
    return r.reachable and not r.running and not r.has_data


def _check_no_member_list(d: Desired, o: Observed, ops: Sequence[Op]) -> None:
    kinds = {op.kind for op in ops}
    assert kinds <= {"start-member", "restart-member"}
    for op in ops:
        dm = d.by_name(op.member)
        assert dm is not None
        r = o.runtime(op.member)
        assert r.reachable and not r.running
        if op.kind == "start-member":
            assert not o.formed and op.initial_state == "new"
            # a fresh member bootstraps only when every node answers
            assert r.has_data or all(o.runtime(x.name).reachable for x in d.members)
            assert op.initial_cluster == tuple((x.name, x.peer_url) for x in d.members)
        else:
            assert o.formed and r.has_data and op.initial_state == "existing"


def _check_join(d: Desired, o: Observed, op: Op, before: Sequence[Op]) -> None:
    """A member joining an existing cluster: in the list already, or added just before."""
    assert op.initial_state == "existing"
    dm = d.by_name(op.member)
    assert dm is not None and dm.peer_url == op.peer_url
    members = o.members or ()
    me = next((m for m in members if op.peer_url in m.peer_urls), None)
    added = bool(before) and before[-1].kind == "add-member" and before[-1].member == op.member
    archived = any(b.kind == "stop-member" and b.member == op.member for b in before)
    # Rule 5: a member outside the list starts only right after its add-member.
    assert added or (me is not None and not me.started), "start of a new member without add"
    r = o.runtime(op.member)
    assert r.reachable and (not r.running or archived) and (not r.has_data or archived)
    # Rule 7: etcd requires the initial cluster to match the member list exactly.
    urls = sorted(u for _, u in op.initial_cluster)
    expected = sorted([u for m in members for u in m.peer_urls] + ([] if me else [op.peer_url]))
    assert urls == expected
    assert (op.member, op.peer_url) in op.initial_cluster
    names = {n for n, _ in op.initial_cluster}
    assert "" not in names and len(names) == len(members) + (0 if me else 1)


def _check_traffic(d: Desired, o: Observed, op: Op, i: int, removed: set[int],
                   stopped: set[str]) -> None:
    """Rule 3 and the contract: never empty, only healthy desired voters, nobody leaving."""
    assert d.apiserver_file and o.published is not None
    assert op.endpoints and len(set(op.endpoints)) == len(op.endpoints)
    assert set(op.endpoints) != set(o.published)
    for url in op.endpoints:
        dm = next((x for x in d.members if x.client_url == url), None)
        assert dm is not None, "not in the config"
        m = o.live_by_peer_url(dm.peer_url)
        assert m is not None and not m.learner and o.is_healthy(m), "unhealthy or learner"
        assert m.id not in removed and dm.name not in stopped, "leaving"
    if op.kind == "stop-apiserver-traffic":
        assert i == 0, "traffic is cut before anything else"
    else:
        assert set(op.endpoints) >= set(o.published)


def _check_quorum_walk(o: Observed, ops: Sequence[Op]) -> None:
    """Rule 4: after every op, healthy voters >= quorum of the voting set then."""
    if not o.has_quorum():
        return
    voters = {m.id for m in o.voters()}
    healthy = {m.id for m in o.healthy_voters()}
    names = {m.id: m.name for m in o.members or ()}
    for op in ops:
        if op.kind == "stop-member":
            healthy -= {i for i in healthy if names.get(i) == op.member or i == op.member_id}
        elif op.kind == "remove-member" and op.member_id in voters:
            voters.discard(op.member_id)
            healthy.discard(op.member_id)
            assert voters, "removed the last voter"
        elif op.kind == "promote-member":
            voters.add(op.member_id)
            healthy.add(op.member_id)
        assert len(healthy & voters) >= quorum(len(voters)), f"quorum broken by {op.kind}"


@FAST
@given(states, st.data())
def test_every_decision_keeps_the_safety_rules(state: tuple[Desired, Observed],
                                               data: st.DataObject) -> None:
    d, o = state
    s = data.draw(standings(d), label="standing")
    decision = plan(d, o, s)
    event(f"phase {decision.phase}")
    event(f"role {decision.role}")
    check_decision(d, o, decision, s)


# ---- interrupted plans in the simulator ---------------------------------------
@st.composite
def worlds(draw: st.DrawFn) -> tuple[Desired, World]:
    """A recoverable cluster: bootstrap not done yet, or enough voters to (re)gain quorum."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    d = desired(names, apiserver_file=draw(st.booleans()))
    w = World({n: Node() for n in POOL})
    w.rbac = draw(st.booleans())
    if draw(often(2)):  # not formed: some members may have been started already
        for n in draw(st.lists(st.sampled_from(names), unique=True)):
            w.apply(StartMember(kind=OpKind.START_MEMBER, member=n, peer_url=peer_url(n),
                       initial_cluster=tuple((x.name, x.peer_url) for x in d.members),
                       initial_state="new"))
            if draw(often(2)):
                w.nodes[n].running = False  # crashed, kept its data
        if draw(st.booleans()):
            w.tick()
    else:
        voters = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=6, unique=True))
        w.members = []
        for n in voters:
            state = draw(st.sampled_from(["healthy", "healthy", "dead", "wiped", "unstarted"]
                                         + (["unreachable"] if n in EXTRAS else [])))
            m = Member(w.new_id(), n, peer_url(n), published=state != "unstarted")
            if state == "unstarted" and draw(st.booleans()):
                m.name = ""  # added out-of-band (a bootstrap member keeps its name)
            w.members.append(m)
            node = w.nodes[n]
            node.data = m.id if state in ("healthy", "dead") else None
            node.running = state == "healthy"
            node.reachable = state != "unreachable"
        others = [n for n in POOL if n not in voters]
        if others and draw(often(3)):
            n = draw(st.sampled_from(others))
            state = draw(st.sampled_from(["unstarted", "running", "synced", "crashed"]))
            m = Member(w.new_id(), "", peer_url(n), learner=True)
            w.members.append(m)
            w.learner_since[m.id] = 0.0
            w.nodes[n].running = state in ("running", "synced")
            w.nodes[n].data = None if state == "unstarted" else m.id
            if state == "synced":
                m.published, m.name = True, n
        for n in others:
            if not any(m.peer == peer_url(n) for m in w.members) and draw(often(2)):
                w.nodes[n].data = 999  # leftovers of an old incarnation
                w.nodes[n].running = draw(st.booleans())
        w.formed = True
        for v in w.voters():  # make it recoverable: the first voters are fine
            if _recoverable(d, w) >= quorum(len(w.voters())):
                break
            node = w.nodes[w.name_of(v)]
            v.published, node.running, node.data, node.reachable = True, True, v.id, True
        assume(_recoverable(d, w) >= quorum(len(w.voters())))
    # transient faults: a node cut off for a while (its process keeps its state),
    # a node on which joining lags past the learner timeout once
    for n in draw(st.lists(st.sampled_from(POOL), max_size=2, unique=True)):
        w.nodes[n].reachable = False
        w.heal_at[n] = draw(st.sampled_from([5.0, 10.0, 20.0, 40.0]))
    w.tls_problems = set(draw(st.lists(st.sampled_from(POOL), max_size=2, unique=True)))
    if draw(often(2)):
        w.alarms.add("NOSPACE")
    for n in draw(st.lists(st.sampled_from(POOL), max_size=1, unique=True)):
        w.slow_until[n] = draw(st.sampled_from([10.0, 70.0, 120.0]))
    if d.apiserver_file:
        listed = draw(st.lists(st.sampled_from(POOL), unique=True))
        w.published = tuple(client_url(n) for n in listed)
    return d, w


def _recoverable(d: Desired, w: World) -> int:
    """Voters that run, or that the daemon can restart on their data. When no
    member answers, the daemon only sees (and restarts) the configured ones."""
    answering = any(w.up(m) and m.published for m in w.members or ())
    return sum(
        1 for m in w.voters()
        if w.up(m) or (w.nodes[w.name_of(m)].reachable and w.nodes[w.name_of(m)].data == m.id
                       and (answering or d.by_peer_url(m.peer) is not None))
    )


ROUNDS = 80  # 60 were enough alone; lapses and drift below waste up to 20 more


def _run(w: World, ops: Sequence[Op], k: int, had_quorum: bool, who: str) -> None:
    for op in ops[:k]:
        try:
            w.apply(op)
        except OpFailed as e:
            note(f"  {who}: {op.kind} failed: {e}")
            break
        if had_quorum:
            assert w.quorum_ok(), f"quorum broken by {who}'s {op.kind} {op.targets()}"


@settings(max_examples=examples(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(worlds(), st.data())
def test_interrupted_plans_converge_without_breaking_quorum(
        start: tuple[Desired, World], data: st.DataObject) -> None:
    """Daemon a (the bootstrapper, usually the leader) and daemon b (a follower on
    one node) plan on the same cluster each round. a's lease lapses in some rounds,
    and another daemon's config differs (or is unread) for the first rounds."""
    d, w = start
    had_quorum = w.quorum_ok()
    learners_at_start = sum(m.learner for m in w.members or ())
    interrupts = data.draw(st.integers(0, 8), label="interruptions")
    elected = data.draw(st.booleans(), label="election on")
    lapses = data.draw(st.sets(st.integers(0, 20), max_size=4), label="rounds a is not leading")
    drift_until = data.draw(st.integers(0, 12), label="configs agree from round")
    mine = membership(d)
    stale = data.draw(st.sampled_from([None, membership(desired(["m1", "x9"]))]),
                      label="drifting config (None: not read yet)")
    own = frozenset({data.draw(st.sampled_from(POOL), label="b's node")})
    for rnd in range(ROUNDS):
        o = w.observe()
        peers = {"c": mine} if rnd >= drift_until else None if stale is None else {"c": stale}
        a = Standing(elected=True, leading=rnd not in lapses, bootstrapper=True,
                     peers=peers) if elected else ALONE
        decision = plan(d, o, a)
        check_decision(d, o, decision, a)
        event(f"phase {decision.phase}")
        if not decision.ops and w.converged(d) and decision.role != Role.FOLLOWER:
            assert decision.phase == "steady", decision
            event(f"converged in {min(rnd, 10)}{'+' if rnd >= 10 else ''} rounds")
            return
        ops = decision.ops
        k = len(ops)
        if interrupts and ops:
            interrupts -= 1
            k = data.draw(st.integers(0, len(ops) - 1), label=f"round {rnd}: ops run")
        note(f"round {rnd}: {decision.role} {decision.phase} "
             f"{[f'{op.kind}:{op.targets()}' for op in ops]} ran {k}")
        _run(w, ops, k, had_quorum, "a")
        if elected:  # b's servers file is its own (not modelled): only its restarts act
            b = Standing(elected=True, own_members=own, peers={"a": mine})
            ob = w.observe()  # b looks a moment later, after a's ops
            followed = plan(d, ob, b)
            check_decision(d, ob, followed, b)
            mine_ops = [op for op in followed.ops if op.kind not in TRAFFIC]
            if mine_ops:
                note(f"  b: {[f'{op.kind}:{op.targets()}' for op in mine_ops]}")
            _run(w, mine_ops, len(mine_ops), had_quorum, "b")
        w.tick()
        had_quorum = had_quorum or w.quorum_ok()
        assert sum(m.learner for m in w.members or ()) <= max(1, learners_at_start)
    raise AssertionError(f"no convergence in {ROUNDS} rounds: {w.log[-12:]}")

"""A tiny, pure model of an etcd cluster and its nodes, for interrupted-plan tests.

`World` holds what is true (nodes, their processes and data, the member list,
the servers file); `observe()` turns it into the `Observed` the daemon would
see, `apply(op)` carries out one op the way the op modules and etcd would
(refusing what etcd refuses), and `tick()` lets time pass: started members
join and publish themselves, learners catch up, removed members exit.

The model is deliberately strict where etcd is strict:
- a member joining with `--initial-cluster-state existing` exits at once
  unless its initial cluster has exactly the live members' peer URLs;
- member add/remove/promote need a leader; removal is refused when it would
  leave fewer running voters than the new quorum (strict reconfig check);
- promotion is refused until the learner has caught up;
- a process whose data belongs to a member no longer in the list exits;
- a NOSPACE alarm is only worth disarming after a compaction and then a
  defragmentation of every member; defragmenting while any member is
  unhealthy is a violation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from ckeetcd.core.model import Desired, Health, LiveMember, Observed, Op, Runtime, quorum
from tests.builders import client_url, peer_url


class OpFailed(Exception):
    """The op could not do its job (the runner stops here; next cycle decides again)."""


class Violation(AssertionError):
    """The decision asked for something that is never allowed (not a mere failure)."""


@dataclass
class Node:
    reachable: bool = True
    running: bool = False
    data: int | None = None  # ID of the member whose data is on disk


@dataclass
class Member:
    id: int
    name: str
    peer: str
    published: bool = False
    learner: bool = False


@dataclass
class World:
    nodes: dict[str, Node]
    members: list[Member] | None = None
    formed: bool = False
    published: tuple[str, ...] | None = None
    rbac: bool = True
    time: float = 0.0
    learner_since: dict[int, float] = field(default_factory=dict)
    bootstrap: tuple[tuple[str, str], ...] = ()
    heal_at: dict[str, float] = field(default_factory=dict)  # node reachable again then
    slow_until: dict[str, float] = field(default_factory=dict)  # joins on it lag till then
    tls_problems: set[str] = field(default_factory=set)  # nodes with certs to renew
    alarms: set[str] = field(default_factory=set)  # "NOSPACE"
    compacted: bool = False  # since the alarm was raised
    defragged: set[int] = field(default_factory=set)  # since the last compaction
    next_id: int = 1000
    log: list[str] = field(default_factory=list)

    # ---- facts --------------------------------------------------------------
    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def bootstrap_id(self, name: str) -> int:
        """IDs of initial-cluster members, fixed by name (etcd hashes URLs + token)."""
        return 1 + sorted(n for n, _ in self.bootstrap).index(name) if self.bootstrap else 0

    def name_of(self, m: Member) -> str:
        return next((n for n in self.nodes if peer_url(n) == m.peer), "")

    def up(self, m: Member) -> bool:
        """The member's process runs on its own data."""
        node = self.nodes.get(self.name_of(m))
        return bool(node and node.reachable and node.running and node.data == m.id)

    def voters(self) -> list[Member]:
        return [m for m in self.members or () if not m.learner]

    def leader(self) -> bool:
        voters = self.voters()
        return bool(voters) and sum(self.up(m) for m in voters) >= quorum(len(voters))

    def healthy(self, m: Member) -> bool:
        return self.up(m) and m.published and self.leader()

    def healthy_voters(self) -> int:
        return sum(self.up(m) and m.published for m in self.voters())

    def quorum_ok(self) -> bool:
        """Healthy voters >= quorum(voters): what no decided op may break."""
        return self.members is not None and bool(self.voters()) and (
            self.healthy_voters() >= quorum(len(self.voters())))

    def member(self, member_id: int) -> Member | None:
        return next((m for m in self.members or () if m.id == member_id), None)

    # ---- what the observer sees ---------------------------------------------
    def observe(self) -> Observed:
        members = self.members
        answering = members is not None and any(self.up(m) and m.published for m in members)
        health: dict[int, Health] = {}
        live: tuple[LiveMember, ...] | None = None
        if answering and members is not None:
            live = tuple(
                LiveMember(m.id, m.name, (m.peer,),
                           (client_url(self.name_of(m)),) if m.published else (), m.learner)
                for m in members
            )
            for m in members:
                ok = self.healthy(m)
                health[m.id] = Health(healthy=ok, member_id=m.id if ok else 0,
                                      learner=m.learner, error="" if ok else "no answer")
        return Observed(
            members=live,
            health=MappingProxyType(health),
            runtimes=MappingProxyType({
                n: Runtime(reachable=True, running=x.running, has_data=x.data is not None,
                           tls_problem="expiring" if n in self.tls_problems else "")
                if x.reachable else Runtime(reachable=False) for n, x in self.nodes.items()}),
            rbac_ready=self.rbac if live is not None else None,
            learner_ages=MappingProxyType({
                i: self.time - t for i, t in self.learner_since.items()} if live else {}),
            formed=self.formed,
            published=self.published,
            alarms=tuple((0, a) for a in sorted(self.alarms)) if live else (),
        )

    # ---- time passes ----------------------------------------------------------
    def tick(self, seconds: float = 5.0) -> None:
        self.time += seconds
        for name, at in list(self.heal_at.items()):
            if self.time >= at:
                self.nodes[name].reachable = True
                del self.heal_at[name]
        if self.members is None and self.bootstrap:
            started = [n for n, _ in self.bootstrap if n in self.nodes
                       and self.nodes[n].running and self.nodes[n].data == self.bootstrap_id(n)]
            if len(started) >= quorum(len(self.bootstrap)):
                self.members = [Member(self.bootstrap_id(n), n, u) for n, u in self.bootstrap]
        if self.members is None:
            return
        ids = {m.id for m in self.members}
        for node in self.nodes.values():
            if node.running and node.data not in ids:
                node.running = False  # "the member has been permanently removed"
        if self.leader():
            for m in self.members:
                slow = self.slow_until.get(self.name_of(m), 0.0) > self.time
                if self.up(m) and not m.published and not slow:
                    m.published, m.name = True, self.name_of(m)
        if all(self.healthy(m) for m in self.members):
            self.formed = True

    # ---- ops ------------------------------------------------------------------
    def apply(self, op: Op) -> None:
        self.log.append(f"{op.kind} {op.member or ','.join(op.endpoints)}")
        getattr(self, "_" + op.kind.replace("-", "_"))(op)

    def _node(self, name: str) -> Node:
        if not name or name not in self.nodes:
            raise Violation(f"op on unknown node {name!r}")
        node = self.nodes[name]
        if not node.reachable:
            raise OpFailed(f"node of {name} unreachable")
        return node

    def _need_leader(self) -> None:
        if self.members is None or not self.leader():
            raise OpFailed("no leader")

    def _start_member(self, op: Op) -> None:
        node = self._node(op.member)
        if node.running:
            return
        self.tls_problems.discard(op.member)  # the start installs current certificates
        if op.initial_state == "new":
            if self.formed:
                raise Violation(f"bootstrap start of {op.member} in a formed cluster")
            if not self.bootstrap:
                self.bootstrap = op.initial_cluster
            if op.initial_cluster != self.bootstrap:
                raise Violation("bootstrap starts disagree on the initial cluster")
            me = next((m for m in self.members or () if m.peer == op.peer_url), None)
            if self.members is not None and (me is None or me.published) and node.data is None:
                # etcd: "member has already been bootstrapped" / not in the cluster
                raise Violation(f"bootstrap start of {op.member} in a formed cluster")
            node.running = True
            if node.data is None:
                node.data = self.bootstrap_id(op.member)
            return
        if node.data is not None and op.kind == "start-member":
            raise OpFailed("a joining member needs an empty data dir")
        node.running = True
        if node.data is None:
            self._join(op, node)

    def _join(self, op: Op, node: Node) -> None:
        """etcd with state existing and no data: fetch the cluster, match, or exit."""
        me = next((m for m in self.members or () if m.peer == op.peer_url), None)
        names = [n for n, _ in op.initial_cluster]
        ok = (
            me is not None
            and sorted(u for _, u in op.initial_cluster) == sorted(m.peer for m in self.members
                                                                   or ())
            and len(set(names)) == len(names)
            and (op.member, op.peer_url) in op.initial_cluster
        )
        if not ok or me is None:
            node.running = False  # etcd exits: member count is unequal / no match
            self.log.append(f"  {op.member} failed to join")
            return
        node.data = me.id

    _restart_member = _start_member

    def _stop_member(self, op: Op) -> None:
        node = self._node(op.member)
        node.running = False
        if op.detail == "archive-data":
            node.data = None

    def _remove_member(self, op: Op) -> None:
        m = self.member(op.member_id)
        if m is None:
            return
        self._need_leader()
        if self.members is not None and not m.learner:
            rest = [v for v in self.voters() if v.id != m.id]
            if not rest:
                raise Violation("removing the last voter")
            if sum(self.up(v) for v in rest) < quorum(len(rest)):
                # etcd refuses (strict reconfig check); the snapshot was fresh, so
                # the decision was wrong to ask
                raise Violation("removal refused: not enough started members")
            self.members = [x for x in self.members if x.id != m.id]
        elif self.members is not None:
            self.members = [x for x in self.members if x.id != m.id]
        self.learner_since.pop(m.id, None)

    def _add_member(self, op: Op) -> None:
        self._need_leader()
        assert self.members is not None
        if any(m.peer == op.peer_url for m in self.members):
            return
        if any(m.learner for m in self.members):
            raise OpFailed("another learner is in flight")
        new = Member(self.new_id(), "", op.peer_url, learner=True)
        self.members.append(new)
        self.learner_since[new.id] = self.time

    def _promote_member(self, op: Op) -> None:
        self._need_leader()
        m = self.member(op.member_id)
        if m is None or not m.learner:
            return
        if not (self.up(m) and m.published):
            raise OpFailed("can only promote a learner member which is in sync with leader")
        m.learner = False
        self.learner_since.pop(m.id, None)

    def _renew_member_certs(self, op: Op) -> None:
        node = self._node(op.member)
        if not node.running:
            raise Violation(f"renewing certificates of {op.member}, which is not running")
        self.tls_problems.discard(op.member)

    def _compact(self, op: Op) -> None:
        self._need_leader()
        self.compacted, self.defragged = True, set()

    def _defrag_member(self, op: Op) -> None:
        self._need_leader()
        m = self.member(op.member_id)
        if m is None:
            raise OpFailed("not a member")
        sick = [x.id for x in self.members or () if not self.healthy(x)]
        if sick:
            raise Violation(f"defragmenting {op.member} while {sick} are unhealthy")
        self.defragged.add(m.id)

    def _disarm_alarm(self, op: Op) -> None:
        self._need_leader()
        ids = {m.id for m in self.members or ()}
        if not self.compacted or not ids <= self.defragged:
            raise Violation("disarmed before compacting and defragmenting every member")
        self.alarms.discard(op.detail)
        self.compacted = False

    def _ensure_rbac(self, op: Op) -> None:
        self._need_leader()
        self.rbac = True

    def _stop_apiserver_traffic(self, op: Op) -> None:
        if not op.endpoints:
            raise Violation("empty servers file")
        self.published = op.endpoints

    _publish_endpoints = _stop_apiserver_traffic

    # ---- the goal ---------------------------------------------------------------
    def converged(self, desired: Desired) -> bool:
        """Exactly the desired members, all voting, healthy, with good certificates
        (and published, if a servers file is kept)."""
        if self.members is None:
            return False
        peers = sorted(m.peer for m in self.members)
        if peers != sorted(d.peer_url for d in desired.members):
            return False
        if not all(not m.learner and self.healthy(m) for m in self.members):
            return False
        if any(d.name in self.tls_problems for d in desired.members) or self.alarms:
            return False
        return not (desired.apiserver_file and self.published is not None
                    and set(self.published) != {d.client_url for d in desired.members})

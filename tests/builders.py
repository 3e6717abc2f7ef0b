"""Small, pure state builders for decide() tests (in the style of CKE's strategy_test.go).

Every value is derived from member names, deterministically and without I/O:

    m3  -> address 10.0.0.3, client https://10.0.0.3:2379, peer https://10.0.0.3:2380
    x9  -> address 10.0.24.9 (the letter picks the third octet)

    desired(["m1", "m2", "m3"], apiserver_file=True)
    cluster(voters=["m1", "m2", "m3"], dead=["m2"], wiped=["m3"], learner="m4",
            learner_age=90.0, extra=["x9"], unreachable=["x9"], published=["m1"])

`cluster()` describes what the observer would see: which members are in the
member list and in what state their process and data are. Names not in the
member list can still be given a node with `idle=`/`dead=`/`running=`/...
(e.g. the replacement's node before it is added, or nodes during bootstrap).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType

from ckeetcd.core.model import (
    Decision,
    Desired,
    DesiredMember,
    Health,
    LiveMember,
    Observed,
    Op,
    Runtime,
)

_NAME = re.compile(r"^([a-z]+)(\d+)$")


def address(name: str) -> str:
    """m<N> -> 10.0.0.N; other letters pick another third octet; anything else hashes."""
    match = _NAME.match(name)
    if match and 1 <= int(match.group(2)) <= 254:
        third = 0 if match.group(1) == "m" else (ord(match.group(1)[0]) - ord("a")) % 250 + 1
        return f"10.0.{third}.{int(match.group(2))}"
    h = zlib.crc32(name.encode())
    return f"10.{(h >> 16) % 250 + 1}.{(h >> 8) & 255}.{h % 254 + 1}"


def client_url(name: str) -> str:
    return f"https://{address(name)}:2379"


def peer_url(name: str) -> str:
    return f"https://{address(name)}:2380"


def mid(name: str, incarnation: int = 0) -> int:
    """A stable, non-zero etcd member ID for `name` (a new one per incarnation)."""
    return (zlib.crc32(f"{name}#{incarnation}".encode()) << 8) | 0x1


def dmember(name: str) -> DesiredMember:
    return DesiredMember(name, address(name), client_url(name), peer_url(name))


def desired(names: Iterable[str], *, apiserver_file: bool = False,
            learner_timeout: float = 60.0, cluster_name: str = "test", paused: bool = False,
            defrag_threshold: float = 0.0, defrag_min_db_size: int = 0) -> Desired:
    return Desired(cluster_name=cluster_name, members=tuple(dmember(n) for n in names),
                   learner_timeout=learner_timeout, apiserver_file=apiserver_file,
                   paused=paused, defrag_threshold=defrag_threshold,
                   defrag_min_db_size=defrag_min_db_size)


def live(name: str, *, learner: bool = False, started: bool = True,
         bootstrap: bool = False, incarnation: int = 0) -> LiveMember:
    """A member-list entry. Unstarted members have no client URLs; only members
    from the bootstrap initial cluster already carry their name (etcd 3.5)."""
    shown_name = name if started or bootstrap else ""
    clients = (client_url(name),) if started else ()
    return LiveMember(mid(name, incarnation), shown_name, (peer_url(name),), clients, learner)


HEALTHY = Runtime(reachable=True, running=True, has_data=True, pid=100)
DEAD = Runtime(reachable=True, running=False, has_data=True)  # process gone, data kept
WIPED = Runtime(reachable=True, running=False, has_data=False)  # process and data gone
IDLE = WIPED  # a reachable node with nothing on it
UNREACHABLE = Runtime(reachable=False, error="node unreachable")
HUNG = HEALTHY  # runs, but its Status RPC does not answer


def cluster(
    voters: Iterable[str] = (),
    *,
    extra: Iterable[str] = (),
    dead: Iterable[str] = (),
    wiped: Iterable[str] = (),
    unreachable: Iterable[str] = (),
    hung: Iterable[str] = (),
    running: Iterable[str] = (),
    idle: Iterable[str] = (),
    unstarted: Iterable[str] = (),
    bootstrap_unstarted: Iterable[str] = (),
    learner: str | None = None,
    learner_started: bool = False,
    learner_running: bool | None = None,
    learner_healthy: bool | None = None,
    learner_age: float = 1.0,
    learners: Iterable[str] = (),
    not_formed: bool = False,
    formed: bool | None = None,
    no_member_list: bool = False,
    published: Iterable[str] | None = None,
    rbac_ready: bool | None = True,
    runtimes: Mapping[str, Runtime] | None = None,
    alarms: Iterable[tuple[str, str]] = (),
    db: Mapping[str, tuple[int, int]] | None = None,
    paused: str = "",
) -> Observed:
    """What the observer sees.

    - voters/extra: voting members in the member list (extra: ones the config
      does not name; only a reminder for the reader, they behave the same);
    - dead: process stopped, data kept; wiped: process and data gone;
      unreachable: node does not answer; hung: process runs, Status fails;
      running/idle: nodes of names not (necessarily) in the member list;
    - unstarted: voters added out-of-band, never started (no name, no client URLs);
      bootstrap_unstarted: voters of the initial cluster that never started
      (etcd shows their name but no client URLs);
    - learner: one learner (unstarted unless learner_started); learner_running
      defaults to learner_started; learners: more learners, unstarted, idle nodes;
    - not_formed: nobody answers MemberList and no cluster was ever formed;
      no_member_list + formed: nobody answers but a cluster was formed before;
    - published: names listed in the etcd servers file (None: no file kept);
    - alarms: (member name, "NOSPACE"/"CORRUPT") active alarms ("" = member ID 0);
    - db: member name -> (db_size, db_size_in_use) as its Status reports them;
    - paused: why `ckeetcd pause` paused the daemon ("" = not paused).
    """
    dead, wiped, unreachable, hung = set(dead), set(wiped), set(unreachable), set(hung)
    running, idle = set(running), set(idle)
    voter_names = [*voters, *extra]
    rts: dict[str, Runtime] = {}
    members: list[LiveMember] = []
    health: dict[int, Health] = {}
    ages: dict[int, float] = {}

    def node(name: str, default: Runtime) -> Runtime:
        if name in unreachable:
            return UNREACHABLE
        if name in dead:
            return DEAD
        if name in wiped or name in idle:
            return WIPED
        if name in hung or name in running:
            return HEALTHY
        return default

    for n in voter_names:
        m = live(n)
        members.append(m)
        rts[n] = node(n, HEALTHY)
        ok = n not in dead | wiped | unreachable | hung
        health[m.id] = Health(healthy=ok, member_id=m.id if ok else 0,
                              leader_id=mid(voter_names[0]) if ok else 0,
                              error="" if ok else "no answer")
    for n in [*unstarted, *bootstrap_unstarted]:
        m = live(n, started=False, bootstrap=n in set(bootstrap_unstarted))
        members.append(m)
        rts[n] = node(n, IDLE)
        health[m.id] = Health(healthy=False, error="no answer")
    if learner is not None:
        is_running = learner_started if learner_running is None else learner_running
        ok = learner_started and is_running if learner_healthy is None else learner_healthy
        m = live(learner, learner=True, started=learner_started)
        members.append(m)
        rts[learner] = node(learner, HEALTHY if is_running else (DEAD if learner_started
                                                                 else IDLE))
        health[m.id] = Health(healthy=ok, member_id=m.id if ok else 0, learner=True,
                              leader_id=mid(voter_names[0]) if ok and voter_names else 0,
                              error="" if ok else "no answer")
        ages[m.id] = learner_age
    for n in learners:
        m = live(n, learner=True, started=False)
        members.append(m)
        rts[n] = node(n, IDLE)
        health[m.id] = Health(healthy=False, error="no answer")
        ages[m.id] = 1.0
    for n in dead | wiped | unreachable | hung | running | idle:
        rts.setdefault(n, node(n, IDLE))
    rts.update(runtimes or {})
    for name, (size, in_use) in (db or {}).items():
        m = next(x for x in members if x.peer_url == peer_url(name))
        health[m.id] = replace(health[m.id], db_size=size, db_size_in_use=in_use)

    listed = not (not_formed or no_member_list)
    return Observed(
        members=tuple(members) if listed else None,
        health=MappingProxyType(health if listed else {}),
        runtimes=MappingProxyType(rts),
        rbac_ready=rbac_ready if listed else None,
        learner_ages=MappingProxyType(ages if listed else {}),
        formed=(not not_formed) if formed is None else formed,
        published=None if published is None else tuple(client_url(n) for n in published),
        alarms=tuple((mid(n) if n else 0, a) for n, a in alarms),
        paused=paused,
    )


# ---- reading decisions -------------------------------------------------------
def steps(decision: Decision) -> list[tuple[str, str]]:
    """(kind, member) per op; traffic ops show their endpoints' names instead."""
    return [(op.kind, op.member or names_of(op.endpoints)) for op in decision.ops]


def names_of(urls: Iterable[str]) -> str:
    """Client URLs back to builder names (only for names m<N> and <letter><N>)."""
    out = []
    for u in urls:
        host = u.split("//", 1)[1].rsplit(":", 1)[0]
        _, _, third, last = host.split(".")
        prefix = "m" if third == "0" else chr(ord("a") + int(third) - 1)
        out.append(f"{prefix}{last}")
    return ",".join(out)


def op_for(decision: Decision, kind: str, member: str = "") -> Op:
    return next(op for op in decision.ops if op.kind == kind and (not member
                                                                 or op.member == member))

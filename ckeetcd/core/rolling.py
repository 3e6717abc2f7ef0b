"""Which member a rolling change (a new etcd version, changed member settings)
restarts next: a pure decision, table- and property-tested, not yet wired
into the loop (decide.py owns the ladder; see rolling_next for where it plugs in).

Rules, in order (every peer does the same: kubeadm, etcd-manager, CKE):

1. every member changed already: done;
2. a membership change in flight (a learner) or no leader: wait;
3. any member unhealthy (the one just restarted included, and one that never
   comes back: it holds the rest): wait, and say which;
4. any member whose applied index trails the leader's by more than `max_lag`:
   wait until it caught up;
5. a follower not yet changed: restart it (config order);
6. only the leader is left: move leadership to the changed voter that is
   furthest along, then (next call, it is a follower) restart it. A
   one-member cluster has no one to hand over to: its member is restarted.

So at most one member is ever down for the change, the leader never while a
follower waits, and nothing while any member is unhealthy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ckeetcd.core.model import LiveMember, Observed

MAX_LAG = 100  # entries an applied index may trail the leader's and still count as caught up


@dataclass(frozen=True)
class RollMember:
    name: str
    healthy: bool
    leader: bool
    done: bool  # already runs the wanted version and settings
    applied_index: int = 0
    learner: bool = False


@dataclass(frozen=True)
class Restart:
    member: str
    reason: str


@dataclass(frozen=True)
class MoveLeader:
    to: str
    reason: str


@dataclass(frozen=True)
class Wait:
    reason: str


@dataclass(frozen=True)
class Done:
    reason: str = "every member runs the wanted version and settings"


Step = Restart | MoveLeader | Wait | Done


def rolling_next(members: Sequence[RollMember], max_lag: int = MAX_LAG) -> Step:
    """The next step of a rolling change over `members` (config order).

    To wire it in, the planning ladder calls it after its repair and
    membership rungs with `roll_members(observed, done)` and turns Restart into
    a restart op (snapshot first, once per rolling change) and MoveLeader into
    etcd's MoveLeader sent to the leader; Wait becomes the phase's reason.
    """
    if all(m.done for m in members):
        return Done()
    if learners := [m.name for m in members if m.learner]:
        return Wait(f"a membership change is in flight (learner {', '.join(learners)})")
    if sick := [m.name for m in members if not m.healthy]:
        return Wait(f"{', '.join(sick)} not healthy: no member is restarted until all are")
    leaders = [m for m in members if m.leader]
    if len(leaders) != 1:
        return Wait("no single raft leader: waiting for the election to end")
    leader = leaders[0]
    lagging = [m.name for m in members if leader.applied_index - m.applied_index > max_lag]
    if lagging:
        return Wait(f"{', '.join(lagging)} not caught up with the leader yet (applied index "
                    f"more than {max_lag} behind)")
    for m in members:
        if not m.done and not m.leader:
            return Restart(m.name, f"follower {m.name} first (the leader goes last)")
    ready = sorted((m for m in members if m.done and not m.leader),
                   key=lambda m: (-m.applied_index, m.name))
    if ready:
        return MoveLeader(ready[0].name, f"leader {leader.name} is last: leadership moves to "
                          f"{ready[0].name}, which is changed already, before it restarts")
    return Restart(leader.name, f"{leader.name} is the only member: restarted where it stands")


def roll_members(observed: Observed, done: Callable[[LiveMember], bool]) -> list[RollMember]:
    """RollMembers from an observation; `done(member)` says whether it is changed."""
    leader = observed.leader_id()
    out = []
    for m in observed.members or ():
        h = observed.health.get(m.id)
        out.append(RollMember(name=m.name or f"{m.id:x}", healthy=bool(h and h.healthy),
                              leader=m.id == leader, done=done(m),
                              applied_index=h.raft_applied_index if h else 0,
                              learner=m.learner))
    return out

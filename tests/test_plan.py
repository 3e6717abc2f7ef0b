"""Named table cases for plan(): what a follower, a leader, a bootstrapper and a
leader held by config drift run, and the plan's own invariants (pure: no etcd).

Each case is (standing, desired, observed, expected [(kind, member-or-endpoints)],
phase, role); ops are shown as in tests/test_decide.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ckeetcd.core import planner
from ckeetcd.core.decide import decide
from ckeetcd.core.kinds import OpKind, Phase, Role
from ckeetcd.core.model import (
    AddMember,
    Decision,
    Desired,
    Observed,
    RemoveMember,
    StartMember,
    StopMember,
)
from ckeetcd.core.planner import ALONE, Standing, membership, plan, violations
from tests.builders import cluster, desired, mid, steps

M3 = ["m1", "m2", "m3"]
SWAP = ["m1", "m2", "m4"]
AGREE = {"b": membership(desired(SWAP)), "c": membership(desired(SWAP))}
STALE = {"b": membership(desired(SWAP)), "c": membership(desired(M3))}  # c has not reloaded


def leader(peers: dict[str, planner.Membership] | None = None) -> Standing:
    return Standing(elected=True, leading=True, bootstrapper=True, peers=peers)


FOLLOWER_M2 = Standing(elected=True, own_members=frozenset({"m2"}), peers=None)
LAPSED_BOOTSTRAPPER = Standing(elected=True, bootstrapper=True)  # lease gone, quorum here
RESTART, STOP, REMOVE = "restart-member", "stop-member", "remove-member"
ADD, START = "add-member", "start-member"
TRAFFIC, RENEW = "stop-apiserver-traffic", "renew-member-certs"


@dataclass(frozen=True)
class Case:
    id: str
    standing: Standing
    desired: Desired
    observed: Observed
    ops: list[tuple[str, str]]
    phase: str
    role: str


CASES = [
    # ---- single daemon: the cluster's whole plan ------------------------------
    Case("alone: the ladder's decision as it is", ALONE, desired(SWAP),
         cluster(M3, idle=["m4"]), [(STOP, "m3"), (REMOVE, "m3")], "member-remove", "single"),
    # ---- follower: only its node's share ---------------------------------------
    Case("follower, quorum holds, a member down: the leader restarts it", FOLLOWER_M2,
         desired(M3), cluster(M3, dead=["m3"]), [], "repair", "follower"),
    Case("follower, no quorum: restarts its own member only", FOLLOWER_M2,
         desired(M3), cluster(M3, dead=["m2", "m3"]), [(RESTART, "m2")], "repair",
         "follower"),
    Case("follower, nobody answers: restarts its own member only", FOLLOWER_M2,
         desired(M3), cluster(no_member_list=True, dead=M3), [(RESTART, "m2")], "no-quorum",
         "follower"),
    Case("follower, no quorum, its own member fine: nothing", FOLLOWER_M2,
         desired(M3), cluster(M3, dead=["m1", "m3"]), [], "repair", "follower"),
    Case("follower: keeps cutting traffic from its own servers file", FOLLOWER_M2,
         desired(M3, apiserver_file=True), cluster(M3, dead=["m3"], published=M3),
         [(TRAFFIC, "m1,m2")], "repair", "follower"),
    Case("follower: no swap, no certificates, no RBAC", FOLLOWER_M2, desired(SWAP),
         cluster(M3, idle=["m4"]), [], "member-remove", "follower"),
    Case("a lapsed lease with quorum: a follower, whatever it was named", LAPSED_BOOTSTRAPPER,
         desired(SWAP), cluster(M3, idle=["m4"]), [], "member-remove", "follower"),
    # ---- bootstrapper: no quorum to elect through, acts alone -------------------
    Case("bootstrapper without quorum restarts every stopped member", LAPSED_BOOTSTRAPPER,
         desired(M3), cluster(M3, dead=["m2", "m3"]), [(RESTART, "m2"), (RESTART, "m3")],
         "repair", "bootstrapper"),
    Case("bootstrapper bootstraps a new cluster", LAPSED_BOOTSTRAPPER, desired(M3),
         cluster(not_formed=True, idle=M3), [(START, "m1"), (START, "m2"), (START, "m3")],
         "bootstrap", "bootstrapper"),
    # ---- leader, configs agree: the whole plan -----------------------------------
    Case("leader, every daemon agrees: the swap goes on", leader(AGREE), desired(SWAP),
         cluster(M3, idle=["m4"]), [(STOP, "m3"), (REMOVE, "m3")], "member-remove", "leader"),
    Case("leader alone in the election (no other daemon): goes on", leader({}),
         desired(SWAP), cluster(["m1", "m2"], idle=["m4"]), [(ADD, "m4"), (START, "m4")],
         "member-add", "leader"),
    # ---- leader held by drift --------------------------------------------------------
    Case("drift: a daemon still lists m3: no remove", leader(STALE), desired(SWAP),
         cluster(M3, idle=["m4"]), [], "config-drift", "leader"),
    Case("drift: the others unread in this term: no add", leader(None), desired(SWAP),
         cluster(["m1", "m2"], idle=["m4"]), [], "config-drift", "leader"),
    Case("drift: the traffic cut still runs, the remove waits", leader(STALE),
         desired(SWAP, apiserver_file=True), cluster(M3, idle=["m4"], dead=["m3"],
                                                     published=M3),
         [(TRAFFIC, "m1,m2")], "config-drift", "leader"),
    Case("drift: repairs that change no membership go on", leader(STALE), desired(M3),
         cluster(M3, dead=["m3"]), [(RESTART, "m3")], "repair", "leader"),
]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_plan(c: Case) -> None:
    decision = plan(c.desired, c.observed, c.standing)
    assert steps(decision) == c.ops, decision.reason
    assert (decision.phase, decision.role) == (c.phase, c.role), decision.reason


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


def test_a_held_decision_says_who_disagrees_and_what_waits() -> None:
    decision = plan(desired(SWAP), cluster(M3, idle=["m4"]), leader(STALE))
    assert "daemons c ask for other members" in decision.reason
    assert "member m3 not in the config" in decision.reason  # what it wanted


def test_alone_is_the_ladder() -> None:
    for d, o in [(desired(SWAP), cluster(M3, idle=["m4"])), (desired(M3), cluster(M3))]:
        assert plan(d, o) == decide(d, o)


# ---- the plan's own invariants ------------------------------------------------------
def ops_decision(role: Role, *ops: object) -> Decision:
    return Decision(Phase.MEMBER_REMOVE, tuple(ops), "", role)  # type: ignore[arg-type]


M3_HEALTHY = cluster(M3)
STOP_M2 = StopMember(member="m2", member_id=mid("m2"), archive_data=True)
STOP_M3 = StopMember(member="m3", member_id=mid("m3"), archive_data=True)
REMOVE_M3 = RemoveMember(member="m3", member_id=mid("m3"))
ADD_M4 = AddMember(member="m4")
RESTART_M2 = StartMember(kind=OpKind.RESTART_MEMBER, member="m2")


@pytest.mark.parametrize("what, decision, standing, rule", [
    ("a follower removing a member", ops_decision(Role.FOLLOWER, REMOVE_M3), FOLLOWER_M2,
     "a follower runs only"),
    ("a follower restarting its own member while quorum holds",
     ops_decision(Role.FOLLOWER, RESTART_M2), FOLLOWER_M2, "a follower runs only"),
    ("a leader adding while a daemon's config differs", ops_decision(Role.LEADER, ADD_M4),
     leader(STALE), "no membership change while"),
    ("two member-list changes", ops_decision(Role.SINGLE, REMOVE_M3, ADD_M4), ALONE,
     "at most one member-list change"),
    ("stopping two of three healthy voters", ops_decision(Role.SINGLE, STOP_M2, STOP_M3),
     ALONE, "quorum holds after every op (stop-member:m3"),
])
def test_the_plan_names_the_invariant_a_decision_breaks(
        what: str, decision: Decision, standing: Standing, rule: str) -> None:
    broken = violations(decision, standing, M3_HEALTHY, membership(desired(SWAP)))
    assert len(broken) == 1 and rule in broken[0], (what, broken)


def test_the_plan_keeps_nothing_of_a_decision_that_breaks_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the ladder ever ask for something unsafe, nothing runs and the reason says why."""
    monkeypatch.setattr(planner, "decide",
                        lambda d, o: Decision(Phase.MEMBER_REMOVE, (STOP_M2, STOP_M3)))
    decision = plan(desired(M3), M3_HEALTHY)
    assert (decision.phase, decision.ops) == ("refused", ())
    assert "quorum holds after every op" in decision.reason
    assert "stop-member:m2, stop-member:m3" in decision.reason


def test_the_sound_decisions_of_the_table_break_none() -> None:
    for c in CASES:
        decision = plan(c.desired, c.observed, c.standing)
        assert violations(decision, c.standing, c.observed, membership(c.desired)) == []

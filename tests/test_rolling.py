"""rolling_next: which member a rolling change restarts next. Named table cases,
then properties over random clusters driven to the end by a small simulator."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from ckeetcd.core.model import Health, LiveMember, Observed
from ckeetcd.core.rolling import (
    MAX_LAG,
    Done,
    MoveLeader,
    Restart,
    RollMember,
    Step,
    Wait,
    roll_members,
    rolling_next,
)
from tests.hypothesis_tiers import examples


def m(name: str, done: bool = False, leader: bool = False, healthy: bool = True,
      applied: int = 1000, learner: bool = False) -> RollMember:
    return RollMember(name, healthy=healthy, leader=leader, done=done, applied_index=applied,
                      learner=learner)


# (case, members, expected step type, target or words in the reason)
CASES: list[tuple[str, list[RollMember], type, str]] = [
    ("all done", [m("a", True, True), m("b", True), m("c", True)], Done, ""),
    ("first follower first", [m("a", leader=True), m("b"), m("c")], Restart, "b"),
    ("followers in config order", [m("a", True), m("b", leader=True), m("c")], Restart, "c"),
    ("a done leader does not matter", [m("a", True, True), m("b"), m("c", True)], Restart, "b"),
    ("leader last: move first", [m("a", leader=True), m("b", True), m("c", True)],
     MoveLeader, "b"),
    ("move to the furthest along", [m("a", leader=True, applied=1000), m("b", True, applied=990),
                                    m("c", True, applied=1000)], MoveLeader, "c"),
    ("after the move the old leader is a follower",
     [m("a"), m("b", True, True), m("c", True)], Restart, "a"),
    ("one member: restarted where it stands", [m("a", leader=True)], Restart, "a"),
    ("an unhealthy member holds everything", [m("a", leader=True), m("b", True, healthy=False),
                                              m("c")], Wait, "b not healthy"),
    ("a member that never comes back holds the rest",
     [m("a", leader=True), m("b", True), m("c", True, healthy=False)], Wait, "c not healthy"),
    ("no leader", [m("a"), m("b"), m("c")], Wait, "election"),
    ("two leaders seen", [m("a", leader=True), m("b", leader=True), m("c")], Wait, "election"),
    ("not caught up", [m("a", leader=True, applied=5000), m("b", True, applied=5000 - MAX_LAG - 1),
                       m("c", applied=5000)], Wait, "b not caught up"),
    ("caught up within the lag", [m("a", leader=True, applied=5000),
                                  m("b", True, applied=5000 - MAX_LAG),
                                  m("c", applied=4990)], Restart, "c"),
    ("a learner: membership change in flight", [m("a", leader=True), m("b"),
                                                m("d", learner=True)], Wait, "learner d"),
]


@pytest.mark.parametrize(("members", "kind", "target"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rolling_next(members: list[RollMember], kind: type, target: str) -> None:
    got = rolling_next(members)
    assert isinstance(got, kind), got
    if isinstance(got, Restart):
        assert got.member == target
    elif isinstance(got, MoveLeader):
        assert got.to == target
    elif isinstance(got, Wait):
        assert target in got.reason


def test_roll_members_from_an_observation() -> None:
    live = tuple(LiveMember(i, n, (f"https://{n}:2380",), (f"https://{n}:2379",))
                 for i, n in ((1, "a"), (2, "b"), (3, "c")))
    health = {1: Health(True, 1, 2, raft_applied_index=10, version="3.5.30"),
              2: Health(True, 2, 2, raft_applied_index=11, version="3.4.23"),
              3: Health(False, 3, error="no answer")}
    obs = Observed(members=live, health=health)
    got = roll_members(obs, lambda lm: obs.health[lm.id].version == "3.5.30")
    assert got == [RollMember("a", True, False, True, 10), RollMember("b", True, True, False, 11),
                   RollMember("c", False, False, False, 0)]
    assert isinstance(rolling_next(got), Wait)


# ---- properties ---------------------------------------------------------------------


class Sim:
    """Members that go down when restarted and come back (changed) after some steps;
    a move hands leadership over; an unhealthy member may recover at random."""

    def __init__(self, members: list[RollMember], delays: list[int]) -> None:
        self.members = members
        self.down: dict[str, int] = {}  # name -> steps until healthy again
        self.delays = delays
        self.restarted: list[str] = []

    def view(self) -> list[RollMember]:
        return self.members

    def set(self, name: str, **kw: object) -> None:
        self.members = [replace(x, **kw) if x.name == name else x for x in self.members]  # type: ignore[arg-type]

    def apply(self, step: Step) -> None:
        if isinstance(step, Restart):
            self.restarted.append(step.member)
            was_leader = next(x for x in self.members if x.name == step.member).leader
            self.set(step.member, healthy=False, leader=False)
            self.down[step.member] = self.delays[len(self.restarted) % len(self.delays)]
            if was_leader and len(self.members) > 1:  # an election among the others
                other = next(x.name for x in self.members if x.name != step.member)
                self.set(other, leader=True)
        elif isinstance(step, MoveLeader):
            for x in self.members:
                self.set(x.name, leader=x.name == step.to)
        self.tick()

    def tick(self) -> None:
        for name in list(self.down):
            self.down[name] -= 1
            if self.down[name] <= 0:
                del self.down[name]
                self.set(name, healthy=True, done=True)
        if not any(x.leader for x in self.members) and not self.down:
            self.set(self.members[0].name, leader=True)
        for x in self.members:  # the rest heal on their own, eventually
            if not x.healthy and x.name not in self.down:
                self.set(x.name, healthy=True)


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[RollMember], list[int]]:
    n = draw(st.integers(1, 5))
    names = [f"m{i}" for i in range(n)]
    leader = draw(st.sampled_from(names))
    members = [RollMember(x, healthy=draw(st.booleans()) or x == leader, leader=x == leader,
                          done=draw(st.booleans()), applied_index=100) for x in names]
    delays = draw(st.lists(st.integers(1, 4), min_size=1, max_size=5))
    return members, delays


@settings(max_examples=examples(300), deadline=None)
@given(clusters())
def test_rolling_change_properties(case: tuple[list[RollMember], list[int]]) -> None:
    members, delays = case
    sim = Sim(members, delays)
    for _ in range(100):
        view = sim.view()
        step = rolling_next(view)
        note(f"{view} -> {step}")
        if isinstance(step, Done):
            break
        if isinstance(step, Restart):
            # never while any member is unhealthy: so never more than one down
            assert all(x.healthy for x in view)
            target = next(x for x in view if x.name == step.member)
            assert not target.done
            # never the leader while a follower still waits (or while it could hand over)
            if target.leader:
                assert len(view) == 1
        if isinstance(step, MoveLeader):
            to = next(x for x in view if x.name == step.to)
            assert to.done and to.healthy and not to.leader
            assert all(x.done for x in view if not x.leader)
        sim.apply(step)
        assert sum(1 for x in sim.view() if not x.healthy) <= max(
            1, sum(1 for x in members if not x.healthy))
    else:
        raise AssertionError("the rolling change did not end")
    assert all(x.done for x in sim.view())
    # each member that needed the change was restarted exactly once
    assert sorted(sim.restarted) == sorted(x.name for x in members if not x.done)

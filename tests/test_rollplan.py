"""The rolling change in the plan: fingerprint differences (table), the step the plan
takes (table), and a walk to the end that restarts each member once, the leader last."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from ckeetcd.core.memberchange import flag_diff, member_change, restart_flags, version_change
from ckeetcd.core.model import Health, Observed, Runtime
from ckeetcd.core.planner import plan
from tests.builders import client_url, cluster, desired, mid

HB = ("--heartbeat-interval=100 -> --heartbeat-interval=150",)


@pytest.mark.parametrize(("started", "wanted", "diff"), [
    (["--heartbeat-interval=100"], ["--heartbeat-interval=100"], ()),
    (["--heartbeat-interval=100"], ["--heartbeat-interval=150"], HB),
    (["--a=1", "--b=2"], ["--b=2", "--a=1"], ()),  # order does not matter
    ([], ["--quota-backend-bytes=1"], ("add --quota-backend-bytes=1",)),
    (["--auto-compaction-retention=1"], [], ("drop --auto-compaction-retention=1",)),
    (["--name=a", "--initial-cluster=a=x", "--initial-cluster-state=new"],
     ["--name=a", "--initial-cluster=a=x,b=y", "--initial-cluster-state=existing"], ()),
])
def test_flag_diff(started: list[str], wanted: list[str], diff: tuple[str, ...]) -> None:
    assert flag_diff(restart_flags(started), restart_flags(wanted)) == diff


@pytest.mark.parametrize(("running", "wanted", "said"), [
    ("3.4.23", "3.5.30", "etcd 3.4.23 -> 3.5.30"), ("3.5.30", "3.5.1", "etcd 3.5.30 -> 3.5.1"),
    ("3.5.30", "3.5.30", ""), ("", "3.5.30", ""), ("3.5.30", "", ""),
])
def test_version_change(running: str, wanted: str, said: str) -> None:
    assert version_change(running, wanted) == said


def test_member_change_counts_only_running_members_and_trusts_their_status() -> None:
    up = Health(healthy=True, version="3.4.23")
    assert member_change(Runtime(running=True, wanted_version="3.5.30"), up) == (
        "etcd 3.4.23 -> 3.5.30",)
    assert member_change(Runtime(running=False, wanted_version="3.5.30", flag_change=HB),
                         up) == ()
    # Started before fingerprints were recorded: no flag change is known, none is made.
    assert member_change(Runtime(running=True, wanted_version="3.4.23"), up) == ()


NAMES = ["a", "b", "c"]


def rolled(o: Observed, versions: dict[str, str], wanted: str = "3.5.30",
           flags: dict[str, tuple[str, ...]] | None = None, applied: int = 1000,
           leader: str = "a") -> Observed:
    """`o` with member versions, a wanted binary version and flag changes."""
    health = {i: replace(h, version=versions[n], raft_applied_index=applied,
                         leader_id=mid(leader))
              for n in NAMES for i, h in o.health.items() if i == mid(n)}
    rts = {n: replace(r, wanted_version=wanted, flag_change=(flags or {}).get(n, ()))
           for n, r in o.runtimes.items()}
    return replace(o, health=MappingProxyType(health), runtimes=MappingProxyType(rts))


D = desired(NAMES)
OLD = {"a": "3.4.23", "b": "3.4.23", "c": "3.4.23"}


def kinds(o: Observed) -> list[tuple[str, str]]:
    return [(op.kind, op.member) for op in plan(D, o).ops]


def test_first_follower_first_with_the_snapshot() -> None:
    dec = plan(D, rolled(cluster(NAMES), OLD))
    assert dec.phase == "rolling" and kinds(rolled(cluster(NAMES), OLD)) == [
        ("stop-member", "b"), ("restart-member", "b")]
    assert dec.ops[0].pre_snapshot and "etcd 3.4.23 -> 3.5.30" in dec.reason  # type: ignore


def test_every_step_of_one_change_names_the_same_snapshot() -> None:
    first = plan(D, rolled(cluster(NAMES), OLD)).ops[0]
    dec = plan(D, rolled(cluster(NAMES), {**OLD, "b": "3.5.30"}))
    assert [(op.kind, op.member) for op in dec.ops] == [("stop-member", "c"),
                                                          ("restart-member", "c")]
    assert dec.ops[0].snapshot_tag == first.snapshot_tag != ""  # type: ignore[attr-defined]
    other = plan(D, rolled(cluster(NAMES), OLD, wanted="3.5.16")).ops[0]
    assert other.snapshot_tag != first.snapshot_tag  # type: ignore[attr-defined]
    flags = plan(D, rolled(cluster(NAMES), dict.fromkeys(NAMES, "3.5.30"),
                           flags={"c": HB})).ops[0]
    assert flags.pre_snapshot and flags.snapshot_tag  # type: ignore[attr-defined]


def test_a_restarted_member_leaves_the_etcd_servers_file_first() -> None:
    with_file = desired(NAMES, apiserver_file=True)
    o = replace(rolled(cluster(NAMES, published=NAMES), OLD))
    dec = plan(with_file, o)
    assert [(op.kind, op.targets()) for op in dec.ops] == [
        ("stop-apiserver-traffic", ",".join(client_url(n) for n in ("a", "c"))),
        ("stop-member", "b"), ("restart-member", "b")]
    # ... and drains before it stops ([apiserver] drain_seconds): clients that follow
    # the file are off it by then
    assert dec.ops[1].drain  # type: ignore[attr-defined]
    # a daemon killed right after the cut: the member it cut stays out (it is the next to
    # restart) and the restart goes ahead; a second cut and drain would change nothing
    cut = rolled(cluster(NAMES, published=["a", "c"]), OLD)
    assert [(op.kind, op.member) for op in plan(with_file, cut).ops] == [
        ("stop-member", "b"), ("restart-member", "b")]
    assert not plan(with_file, cut).ops[0].drain  # type: ignore[attr-defined]
    # ... but a member out of the file that is not next is put back
    other = rolled(cluster(NAMES, published=["a", "b"]), OLD)
    assert [op.kind for op in plan(with_file, other).ops] == ["publish-endpoints"]
    # no servers file kept: nothing to cut, nothing to drain
    assert kinds(rolled(cluster(NAMES), OLD)) == [("stop-member", "b"), ("restart-member", "b")]
    assert not plan(D, rolled(cluster(NAMES), OLD)).ops[0].drain  # type: ignore[attr-defined]


def test_the_leader_last_after_moving_leadership() -> None:
    o = rolled(cluster(NAMES), {"a": "3.4.23", "b": "3.5.30", "c": "3.5.30"})
    assert kinds(o) == [("move-leader", "b")]
    moved = rolled(cluster(NAMES), {"a": "3.4.23", "b": "3.5.30", "c": "3.5.30"}, leader="b")
    assert kinds(moved) == [("stop-member", "a"), ("restart-member", "a")]


def test_the_leader_leaves_the_servers_file_before_it_hands_over_and_stays_out() -> None:
    """raft drops the proposals a leader gets while it transfers leadership: its clients
    move off it (cut, drain) before the move-leader, and it is not put back before its
    restart."""
    with_file = desired(NAMES, apiserver_file=True)
    last = {"a": "3.4.23", "b": "3.5.30", "c": "3.5.30"}
    dec = plan(with_file, rolled(cluster(NAMES, published=NAMES), last))
    assert [(op.kind, op.targets()) for op in dec.ops] == [
        ("stop-apiserver-traffic", ",".join(client_url(n) for n in ("b", "c"))),
        ("move-leader", "b")]
    assert dec.ops[1].drain  # type: ignore[attr-defined]
    moved = rolled(cluster(NAMES, published=["b", "c"]), last, leader="b")
    dec = plan(with_file, moved)
    assert [(op.kind, op.member) for op in dec.ops] == [("stop-member", "a"),
                                                        ("restart-member", "a")]
    assert not dec.ops[0].drain  # type: ignore[attr-defined]
    # once it runs the new version, it is published again
    done = rolled(cluster(NAMES, published=["b", "c"]), dict.fromkeys(NAMES, "3.5.30"),
                  leader="b")
    assert [(op.kind, op.targets()) for op in plan(with_file, done).ops] == [
        ("publish-endpoints", ",".join(client_url(n) for n in NAMES))]


def test_a_refused_downgrade_touches_no_member_and_says_why() -> None:
    new = {n: "3.5.30" for n in NAMES}
    dec = plan(D, rolled(cluster(NAMES), new, wanted="3.4.23"))
    assert (dec.phase, dec.ops) == ("upgrade-refused", ())
    assert "minor downgrade" in dec.reason and "ckeetcd restore" in dec.reason


def test_a_skipped_minor_is_refused() -> None:
    dec = plan(D, rolled(cluster(NAMES), OLD, wanted="3.6.0"))
    assert (dec.phase, dec.ops) == ("upgrade-refused", ()) and "skips 3.5" in dec.reason


def test_an_unhealthy_member_holds_the_rest() -> None:
    o = rolled(cluster(NAMES, hung=["c"]), OLD)
    dec = plan(D, o)
    assert not any(op.kind == "stop-member" for op in dec.ops) and dec.phase != "rolling"


def test_a_lagging_member_holds_the_next_restart() -> None:
    o = rolled(cluster(NAMES), {**OLD, "b": "3.5.30"})
    lagging = {i: replace(h, raft_applied_index=10 if i == mid("b") else 5000)
               for i, h in o.health.items()}
    dec = plan(D, replace(o, health=MappingProxyType(lagging)))
    assert (dec.phase, dec.ops) == ("rolling", ()) and "not caught up" in dec.reason


def test_two_members_are_not_restarted_by_the_daemon() -> None:
    d = desired(["a", "b"])
    o = rolled(cluster(["a", "b"]), {"a": "3.4.23", "b": "3.4.23", "c": ""})
    dec = plan(d, o)
    assert (dec.phase, dec.ops) == ("rolling", ()) and "would lose quorum" in dec.reason


def test_a_flag_change_walks_each_member_once_the_leader_last() -> None:
    """Apply each step to the observation as etcd would; every member restarts once."""
    same = {n: "3.5.30" for n in NAMES}
    flags = {n: HB for n in NAMES}
    leader, restarted = "a", []
    for _ in range(10):
        dec = plan(D, rolled(cluster(NAMES), same, flags=flags, leader=leader))
        if dec.phase == "steady":
            break
        assert dec.phase == "rolling", dec
        op = dec.ops[0]
        if op.kind == "move-leader":
            leader = op.member
        else:
            restarted.append(op.member)
            flags[op.member] = ()
    assert restarted == ["b", "c", "a"]


def test_an_auth_change_held_across_minors_does_not_hold_the_upgrade() -> None:
    """A user added mid-upgrade waits for the upgrade, and the upgrade goes on."""
    o = replace(rolled(cluster(NAMES), {**OLD, "b": "3.5.30"}), rbac_ready=False)
    assert kinds(o) == [("stop-member", "c"), ("restart-member", "c")]
    done = replace(rolled(cluster(NAMES), dict.fromkeys(NAMES, "3.5.30")), rbac_ready=False)
    assert kinds(done) == [("ensure-rbac", "")]


def test_a_flag_change_goes_on_while_no_member_version_is_known() -> None:
    """Status without a version (an old build): flags still roll, nothing is refused."""
    o = rolled(cluster(NAMES), dict.fromkeys(NAMES, ""), flags={"b": HB})
    assert kinds(o) == [("stop-member", "b"), ("restart-member", "b")]


def test_with_rolling_changes_off_nothing_is_restarted_and_rbac_is_not_skipped() -> None:
    off = replace(D, rolling_changes=False)
    assert plan(off, rolled(cluster(NAMES), OLD)).phase == "steady"
    o = replace(rolled(cluster(NAMES), {**OLD, "b": "3.5.30"}), rbac_ready=False)
    assert [op.kind for op in plan(off, o).ops] == ["ensure-rbac"]


@pytest.mark.parametrize("blind", ["a", "b"])  # the leader or a follower
def test_a_member_whose_binary_cannot_say_its_version_holds_the_whole_change(
        blind: str) -> None:
    """No member is restarted while one node's binary is unknown: neither the version
    path nor that member's return can be told (a flag change waits as well)."""
    why = "`/opt/etcd --version` on 10.0.0.2 exited 127: not found"
    for o in (rolled(cluster(NAMES), OLD),
              rolled(cluster(NAMES), dict.fromkeys(NAMES, "3.5.30"), flags={"c": HB})):
        rts = {n: replace(r, wanted_version="" if n == blind else r.wanted_version,
                          change_unknown=why if n == blind else "")
               for n, r in o.runtimes.items()}
        dec = plan(D, replace(o, runtimes=MappingProxyType(rts)))
        assert (dec.phase, dec.ops) == ("rolling", ())
        assert "held" in dec.reason and f"{blind}: {why}" in dec.reason
    # Nothing else to change: nothing to hold (status says what is unknown).
    o = rolled(cluster(NAMES), dict.fromkeys(NAMES, "3.5.30"))
    rts = {n: replace(r, wanted_version="", change_unknown=why) for n, r in o.runtimes.items()}
    assert plan(D, replace(o, runtimes=MappingProxyType(rts))).phase == "steady"


def test_a_member_whose_node_cannot_be_inspected_holds_the_change() -> None:
    """An SSH node that did not answer reports nothing to restart; counting it as changed
    could hand leadership to a member still on the old binary."""
    o = rolled(cluster(NAMES), {"a": "3.4.23", "b": "3.5.30", "c": "3.4.23"})
    rts = {n: Runtime(reachable=False, error="ssh 10.0.0.3: timeout") if n == "c" else r
           for n, r in o.runtimes.items()}
    dec = plan(D, replace(o, runtimes=MappingProxyType(rts)))
    assert (dec.phase, dec.ops) == ("rolling", ())
    assert "c: its node is unreachable (ssh 10.0.0.3: timeout)" in dec.reason
    assert kinds(o) == [("stop-member", "c"), ("restart-member", "c")]  # answered: goes on

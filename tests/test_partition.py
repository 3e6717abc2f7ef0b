"""Nodes partitioned (`ip link set eth0 down`) under the soak's workload and checker, in
the namespace lab (tests/netns.py), three daemons: a follower daemon's node, then the
leader daemon's own node, member and daemon cut off together.

The cut-off leader daemon can no longer renew its lease on /ckeetcd/leader
(its member has no quorum on its side), so it must step down, and one of
the other two must take over within the lease TTL. The new leader must
report the cut-off member, stop apiserver traffic to it (the servers files
of the other nodes drop it), and never replace it: it is only unreachable.
With the link back, everything heals without a human. The clients
(tests/soak/labsoak.py) run on a host of their own and follow the servers
file of the node that is never cut off.

The same lab then runs the slow-link faults: a follower daemon's node, then the
leader daemon's own node, slow and lossy both ways for a few seconds
(tests/slowlink.py: tbf and a random-drop filter, as the kernel here has no
sch_netem for `tc netem`). A slow member is only slow: it must never be
replaced, and the cluster must be whole again once the link is.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import wait_for
from tests.multihost import MultiCluster
from tests.netns import Lab
from tests.slowlink import Shape
from tests.soak.checker import event_time
from tests.soak.history import OK, read_history
from tests.soak.labsoak import USERS_EXTRA, LabSoak

MEMBERSHIP_CHANGES = ("remove-member", "add-member", "promote-member")


def three_daemons(lab: Lab, tmp_path: Path) -> tuple[MultiCluster, str, str, str]:
    """Three nodes, a daemon and a member on each, healthy: the cluster, the leader
    daemon's node, the node whose servers file the clients follow, the other one."""
    c = MultiCluster(lab, tmp_path / "mc", ["h1", "h2", "h3"], ["h1", "h2", "h3"],
                     extra=USERS_EXTRA)
    c.share_ca()
    c.start_daemons()
    c.wait_healthy(c.members)
    leader = wait_for(c.leader, 30, "a leader daemon", abort=c.died)
    follow, follower = [d for d in c.daemon_hosts if d != leader]
    return c, leader, follow, follower


def test_partitions_under_the_soak_workload_hand_over_heal_and_lose_nothing(
        lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The soak's writers and readers (on h4, a client host holding no member) through
    a follower daemon's node cut off and healed, then the leader daemon's own node.
    Meanwhile writes go on on the majority side; the cut-off leader daemon steps down,
    another leads and reports the cut-off member; no member is ever replaced. After
    each heal, everything is healthy again without a human. At the end nothing
    acknowledged is missing, no read went back in time, every member holds the same
    copy, the soak user's role is unchanged, and no daemon error is left unexplained."""
    c, leader, follow, follower = three_daemons(lab, tmp_path)

    def dropped(cut: str) -> Callable[[], object]:
        """While `cut` is off: the other nodes' servers files stop listing it (and, for
        the leader daemon's node, another daemon leads)."""
        rest = [d for d in c.daemon_hosts if d != cut]
        want = [c.url(m) for m in c.members if m != cut]
        return lambda: wait_for(
            lambda: all(c.servers(d) == want for d in rest) and c.leader() in rest, 60,
            f"{cut} cut from the servers files of {rest}, a daemon of {rest} leading",
            abort=c.died)

    def last_role(d: str) -> str | None:
        roles = [e["role"] for e in c.events(d, "role_changed")]
        return roles[-1] if roles else None

    def leader_cut() -> None:
        dropped(leader)()
        wait_for(lambda: last_role(leader) != "leader", 60, f"{leader} stepping down",
                 abort=c.died)

    marks = c.marks()
    with LabSoak(c, "h4", follow) as soak:
        soak.start()
        soak.partition(follower, dropped(follower), "follower-node")
        assert c.leader() == leader, "the leader daemon changed under a follower's partition"
        soak.partition(leader, leader_cut, "leader-node")
        report = soak.finish()
    new = c.leader()
    assert new is not None and new != leader  # exactly one daemon leads (leader() checks)
    reported = [e for e in c.events(new, "health", marks[new])
                if any(m["name"] == leader and not m["healthy"] for m in e["members"])]
    assert reported, f"{new} did not report {leader}'s member unhealthy"
    changed = [(d, e["op"]) for d in c.daemon_hosts for e in c.events(d, "op", marks[d])
               if e["op"] in MEMBERSHIP_CHANGES]
    assert changed == [], f"an unreachable member must not be replaced: {changed}"
    with capsys.disabled():
        print(f"\nlab soak: {report.figures['operations']}")
        for row in report.figures["faults"]:
            print(f"  {row}")
    assert report.problems() == []
    assert report.writes.acked > 0 and report.order.reads > 0
    history = read_history(soak.history)
    for f in report.faults:  # the majority side served while the node was cut off
        assert any(r.kind == "put" and r.outcome == OK and f.start < r.end < f.ended
                   for r in history), f"no write acknowledged during {f.kind}"


# The slow link: 200 kbit/s each way with at most 250 ms of queue, and 3 % of the packets
# dropped at random each way. The workload's replication alone exceeds that rate, so the
# queue fills (the heartbeats wait behind it) and also drops its tail. Held for 6 s.
SLOW = Shape(rate_kbit=200, latency_ms=250, loss=0.03)
SLOW_HOLD = 6.0


def _handovers(c: MultiCluster, marks: dict[str, int], start: float, end: float,
               ) -> list[tuple[str, int]]:
    """(daemon, term) of every new leadership term taken in [start, end] (wall). A leader
    that pauses acting while its lease is in doubt and resumes in the same term is no
    handover."""
    terms = {(d, e["term"]) for d in c.daemon_hosts
             for e in c.events(d, "role_changed", marks[d])
             if e["role"] == "leader" and start <= event_time(e) <= end}
    return sorted(terms)


def test_slow_links_under_the_soak_workload_replace_nothing_and_lose_nothing(
        lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The soak's writers and readers through a slow, lossy link (both ways) on a
    follower daemon's node, then on the leader daemon's own node. ping across the link
    shows it really was slow and lossy. A slow member is never replaced (no
    remove/add/promote), leadership does not flap (at most one handover per fault),
    the cluster is whole again after each heal without a human, and at the end nothing
    acknowledged is missing, no read went back in time, every member holds the same
    copy, and no daemon error is left unexplained."""
    if shutil.which("ping") is None:
        pytest.skip("ping missing (apt-get install iputils-ping)")
    c, _, follow, follower = three_daemons(lab, tmp_path)
    marks = c.marks()
    with LabSoak(c, "h4", follow) as soak:
        soak.start()
        soak.slow_link(follower, SLOW, SLOW_HOLD, "follower-node")
        # the leader daemon then: it may have moved under the first fault (its lease
        # keepalives go to the raft leader, which may be the slowed member)
        now = wait_for(c.leader, 30, "a leader daemon", abort=c.died)
        last = soak.slow_link(now, SLOW, SLOW_HOLD, "leader-node")
        assert last.details["leader_daemon"] in last.details["targets"], last.details
        report = soak.finish()
    rows: list[dict[str, Any]] = report.figures["faults"]
    with capsys.disabled():
        print(f"\nlab soak, slow links: {report.figures['operations']}")
        for row in rows:
            print(f"  {row}")
    for row in rows:  # the fault was real: ping across the link saw delay and loss
        ping = row["ping"]
        assert ping["received"] > 0 and ping["rtt_avg_ms"] >= 20, row
        assert ping["loss"] > 0, row
    changed = [(d, e["op"]) for d in c.daemon_hosts for e in c.events(d, "op", marks[d])
               if e["op"] in MEMBERSHIP_CHANGES]
    assert changed == [], f"a slow member must not be replaced: {changed}"
    for f in report.faults:
        handovers = _handovers(c, marks, f.wall_start, f.wall_steady)
        assert len(handovers) <= 1, f"leadership flapped under {f.kind}: {handovers}"
    assert report.problems() == []
    assert report.writes.acked > 0 and report.order.reads > 0

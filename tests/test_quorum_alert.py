"""quorum_lost is an alert: raised on evidence, not on one missed probe (soak finding 7).

The long soak logged `quorum_lost` (error) for a member that was running but
did not answer one probe of a just-restarted daemon; 0.44 s later the next
observation said `quorum_restored`. Now a loss with every voter's etcd still
running is first `quorum_in_doubt` (warning) and becomes `quorum_lost` only
if it is still seen one probe deadline later; a loss whose processes are gone
(kill -9, a crash) is `quorum_lost` at once.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from ckeetcd.core import quorumalert as qa
from ckeetcd.core.quorumalert import Sight, Watch
from tests.harness import Cluster, wait_for

CONFIRM = 1.0


def run(sights: list[Sight]) -> list[str]:
    watch, events = Watch(), []
    for s in sights:
        watch, e = qa.step(watch, s, CONFIRM)
        events.append(e)
    return events


def held(at: float) -> Sight:
    return Sight(voters=3, healthy=3, running=3, at=at)


def silent(at: float, healthy: int = 1, running: int = 3, voters: int = 3) -> Sight:
    return Sight(voters=voters, healthy=healthy, running=running, at=at)


@pytest.mark.parametrize(("sights", "want"), [
    # one missed probe of running members, answered by the next observation
    ([held(0), silent(1.0), held(1.4)], ["", qa.IN_DOUBT, qa.DOUBT_CLEARED]),
    # a daemon's first observation (unknown state) misses a probe: still only a doubt
    ([silent(0, healthy=1, running=2, voters=2), held(0.4)], [qa.IN_DOUBT, qa.DOUBT_CLEARED]),
    # still lost a probe deadline later: confirmed, once
    ([held(0), silent(1.0), silent(1.5), silent(2.0), silent(3.0)],
     ["", qa.IN_DOUBT, "", qa.LOST, ""]),
    ([held(0), silent(1.0), silent(2.5), held(3.0)], ["", qa.IN_DOUBT, qa.LOST, qa.RESTORED]),
    # the processes are gone (kill -9 of two): no retry brings them back, at once
    ([held(0), silent(1.0, running=1), held(4.0)], ["", qa.LOST, qa.RESTORED]),
    # a doubt that turns out to be dead processes: confirmed at that observation
    ([held(0), silent(1.0), silent(1.1, running=1)], ["", qa.IN_DOUBT, qa.LOST]),
    # no member list at all, nothing running
    ([held(0), Sight(voters=3, healthy=0, running=0, at=1.0)], ["", qa.LOST]),
    # a flapping doubt does not pile up: each one cleared
    ([silent(0), held(0.2), silent(0.4), held(0.6)],
     [qa.IN_DOUBT, qa.DOUBT_CLEARED, qa.IN_DOUBT, qa.DOUBT_CLEARED]),
    # nothing to say while quorum holds, from the start too
    ([held(0), held(1)], ["", ""]),
    # one of two voters silent but running: 1 < quorum(2)
    ([Sight(voters=2, healthy=1, running=2, at=0), Sight(voters=2, healthy=1, running=2, at=1)],
     [qa.IN_DOUBT, qa.LOST]),
])
def test_the_alert_needs_evidence_beyond_one_missed_probe(sights: list[Sight],
                                                          want: list[str]) -> None:
    assert run(sights) == want


def leader_and_followers(c: Cluster) -> tuple[str, list[str]]:
    _, obs = c.observe()
    by_id = {m.id: m.name for m in obs.members or ()}
    leader = by_id[obs.leader_id()]
    return leader, sorted(n for n in by_id.values() if n != leader)


@pytest.fixture
def slow_election_cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """A 5 s election timeout: two followers stopped for a second or two leave the
    leader leading (it steps down only after an election timeout without a quorum), so
    their etcd is back at once when continued, as a member that was merely slow."""
    c = make_cluster(extra="[etcd]\nheartbeat_interval_ms = 200\nelection_timeout_ms = 5000\n")
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    return c


def followers_stopped_until(c: Cluster, what: str,
                            seen: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Both followers SIGSTOPped until `seen` returns events (then SIGCONT): those events."""
    _, followers = leader_and_followers(c)
    pids = [c.member_pid(n) for n in followers]
    assert all(pids)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)  # type: ignore[arg-type]
    try:
        return wait_for(seen, 30, what, abort=c.daemon_died)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)  # type: ignore[arg-type]


def test_one_missed_probe_of_running_members_is_a_doubt_not_the_alert(
        slow_election_cluster: Cluster) -> None:
    c = slow_election_cluster
    mark = c.mark()
    seen = followers_stopped_until(c, "the daemon seeing the two followers silent", lambda: [
        e for e in c.events(since=mark) if e["event"] in (qa.IN_DOUBT, qa.LOST)])
    assert seen[0]["event"] == qa.IN_DOUBT and seen[0]["level"] == "warning", seen[0]
    assert seen[0]["running_voters"] == 3 and seen[0]["healthy_voters"] <= 1
    wait_for(lambda: c.events(qa.DOUBT_CLEARED, since=mark), 30, "the doubt cleared",
             abort=c.daemon_died)
    assert c.events(qa.LOST, since=mark) == []
    assert [e for e in c.events(since=mark) if e.get("level") == "error"] == []


def test_a_loss_still_seen_a_probe_deadline_later_is_the_alert(cluster: Cluster) -> None:
    c = cluster
    mark = c.mark()
    lost = followers_stopped_until(c, "quorum_lost", lambda: c.events(qa.LOST, since=mark))
    assert lost[0]["level"] == "error" and "ckeetcd restore" in lost[0]["hint"]
    doubts = c.events(qa.IN_DOUBT, since=mark)
    assert len(doubts) == 1 and doubts[0]["timestamp"] < lost[0]["timestamp"]
    wait_for(lambda: c.events(qa.RESTORED, since=mark), 60, "quorum_restored",
             abort=c.daemon_died)
    assert len(c.events(qa.LOST, since=mark)) == 1

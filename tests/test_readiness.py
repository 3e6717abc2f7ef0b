"""READY=1 means the cluster serves (ckeetcd.core.readiness): a table over observed states."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from ckeetcd.core.model import Health, Observed
from ckeetcd.core.readiness import start_status, waiting_for
from tests.builders import cluster, mid


def no_leader(observed: Observed) -> Observed:
    health = {i: replace(h, leader_id=0) for i, h in observed.health.items()}
    return replace(observed, health=MappingProxyType(health))


def leaders_disagree(observed: Observed) -> Observed:
    """Each healthy member names a leader; the majority names m1: a leader is known."""
    health = dict(observed.health)
    first = next(iter(health))
    health[first] = Health(healthy=True, member_id=first, leader_id=mid("m3"))
    return replace(observed, health=MappingProxyType(health))


CASES = [
    # (name, observed, what is missing: "" = serving, READY=1 may go)
    ("bootstrap: nobody answers", cluster(not_formed=True), "no member answers yet"),
    ("formed before, nobody answers now", cluster(["m1", "m2", "m3"], no_member_list=True),
     "no member answers yet"),
    ("first member up, two unstarted",
     cluster(["m1"], bootstrap_unstarted=["m2", "m3"], rbac_ready=None),
     "no quorum yet (1 of 3 voters healthy)"),
    ("quorum lost", cluster(["m1", "m2", "m3"], dead=["m2", "m3"]),
     "no quorum yet (1 of 3 voters healthy)"),
    ("quorum, no leader elected yet", no_leader(cluster(["m1", "m2", "m3"])), "no leader yet"),
    ("quorum and leader, RBAC never checked", cluster(["m1", "m2", "m3"], rbac_ready=None),
     "RBAC not in place yet"),
    ("quorum and leader, RBAC missing", cluster(["m1", "m2", "m3"], rbac_ready=False),
     "RBAC not in place yet"),
    ("all healthy, RBAC on", cluster(["m1", "m2", "m3"]), ""),
    ("one member down: still serves", cluster(["m1", "m2", "m3"], dead=["m3"]), ""),
    ("a learner joining does not hold READY", cluster(["m1", "m2", "m3"], learner="m4"), ""),
    ("members disagree on the leader: the majority's counts",
     leaders_disagree(cluster(["m1", "m2", "m3"])), ""),
    ("paused but serving", cluster(["m1", "m2", "m3"], paused="maintenance"), ""),
]


@pytest.mark.parametrize(("observed", "missing"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_waiting_for(observed: Observed, missing: str) -> None:
    assert waiting_for(observed) == missing


def test_start_status_names_what_is_missing_and_the_phase() -> None:
    ready, text = start_status(cluster(not_formed=True), "bootstrap: no member has formed a "
                               "cluster yet")
    assert not ready
    assert text == "starting: no member answers yet (bootstrap: no member has formed a " \
                   "cluster yet)"
    assert start_status(cluster(["m1", "m2", "m3"]), "steady") == (True, "steady")

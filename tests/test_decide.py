"""Named table cases for the decision ladder: exact op lists, phases, op fields.

Each case is (desired, observed, expected [(kind, member-or-endpoints)], phase).
Traffic ops (stop-apiserver-traffic, publish-endpoints) are shown with the
names of the endpoints they write, e.g. ("stop-apiserver-traffic", "m1,m2").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from ckeetcd.core.decide import decide
from ckeetcd.core.model import Desired, Observed, Runtime
from tests.builders import (
    DEAD,
    HEALTHY,
    IDLE,
    WIPED,
    client_url,
    cluster,
    desired,
    mid,
    op_for,
    peer_url,
    steps,
)

M3 = ["m1", "m2", "m3"]
SWAP = ["m1", "m2", "m4"]  # the config after replacing m3 by m4


@dataclass(frozen=True)
class Case:
    id: str
    desired: Desired
    observed: Observed
    ops: list[tuple[str, str]]
    phase: str | None = None


def case(id: str, d: Desired, o: Observed, ops: list[tuple[str, str]],
         phase: str | None = None) -> Case:
    return Case(id, d, o, ops, phase)


START, RESTART, STOP = "start-member", "restart-member", "stop-member"
ADD, REMOVE, PROMOTE = "add-member", "remove-member", "promote-member"
TRAFFIC, PUBLISH, RBAC = "stop-apiserver-traffic", "publish-endpoints", "ensure-rbac"
RENEW = "renew-member-certs"
COMPACT, DEFRAG, DISARM = "compact", "defrag-member", "disarm-alarm"
NOSPACE = [("m1", "NOSPACE")]
NOSPACE_PLAN = [(COMPACT, ""), (DEFRAG, "m2"), (DEFRAG, "m3"), (DEFRAG, "m1"), (DISARM, "")]
FRAG = {"defrag_threshold": 0.5, "defrag_min_db_size": 100}  # scheduled defrag on
EXPIRING = replace(HEALTHY, tls_problem="expires in 3600s")
RESTORE_NOTE = "ckeetcd restore, pid 7 on n1, since 2026-11-25T12:00:00+00:00"
RESTORING_DEAD = replace(DEAD, restoring=RESTORE_NOTE)
RESTORING_WIPED = replace(WIPED, restoring=RESTORE_NOTE)

CASES = [
    # ---- bootstrap ---------------------------------------------------------
    case("fresh: bootstrap all three",
         desired(M3), cluster(not_formed=True, idle=M3),
         [(START, "m1"), (START, "m2"), (START, "m3")], "bootstrap"),
    case("fresh single member",
         desired(["m1"]), cluster(not_formed=True, idle=["m1"]),
         [(START, "m1")], "bootstrap"),
    case("bootstrap partially started: a restarted daemon completes it",
         desired(M3), cluster(not_formed=True, running=["m1"], idle=["m2", "m3"]),
         [(START, "m2"), (START, "m3")], "bootstrap"),
    case("bootstrap: a member that crashed keeps its data and starts on it",
         desired(M3), cluster(not_formed=True, running=["m1", "m2"], dead=["m3"]),
         [(START, "m3")], "bootstrap"),
    case("bootstrap waits for an unreachable node",
         desired(M3), cluster(not_formed=True, idle=["m1", "m2"], unreachable=["m3"]),
         [], "bootstrap"),
    case("bootstrap: members with data start on it while a node is unreachable",
         desired(M3), cluster(not_formed=True, dead=["m1", "m2"], unreachable=["m3"]),
         [(START, "m1"), (START, "m2")], "bootstrap"),
    case("bootstrap: all running, waiting for the first election",
         desired(M3), cluster(not_formed=True, running=M3),
         [], "bootstrap"),
    case("bootstrap formed by two; the third never started: start it (existing)",
         desired(M3), cluster(["m1", "m2"], bootstrap_unstarted=["m3"], formed=False),
         [(START, "m3")], "repair"),
    case("bootstrap formed by two; the third's node is unreachable: wait",
         desired(M3), cluster(["m1", "m2"], bootstrap_unstarted=["m3"], formed=False,
                              unreachable=["m3"]),
         [], "degraded"),
    # ---- steady and rbac ---------------------------------------------------
    case("healthy steady",
         desired(M3), cluster(M3), [], "steady"),
    case("healthy steady with the servers file up to date",
         desired(M3, apiserver_file=True), cluster(M3, published=M3), [], "steady"),
    case("rbac missing -> ensure-rbac",
         desired(M3), cluster(M3, rbac_ready=False), [(RBAC, "")], "rbac"),
    case("rbac not yet known -> nothing",
         desired(M3), cluster(M3, rbac_ready=None), [], "steady"),
    # ---- repairs -----------------------------------------------------------
    case("one dead with data -> restart-member",
         desired(M3), cluster(M3, dead=["m2"]), [(RESTART, "m2")], "repair"),
    case("two dead of three (no quorum) -> restarts only",
         desired(M3), cluster(M3, dead=["m2", "m3"], rbac_ready=False),
         [(RESTART, "m2"), (RESTART, "m3")], "repair"),
    case("all dead after formed -> restart all",
         desired(M3), cluster(no_member_list=True, dead=M3),
         [(RESTART, "m1"), (RESTART, "m2"), (RESTART, "m3")], "no-quorum"),
    case("all dead after formed, one node unreachable -> restart the others",
         desired(M3), cluster(no_member_list=True, dead=["m1", "m2"], unreachable=["m3"]),
         [(RESTART, "m1"), (RESTART, "m2")], "no-quorum"),
    case("nobody answers and nobody has data -> wait for the operator",
         desired(M3), cluster(no_member_list=True, wiped=M3), [], "no-quorum"),
    case("quorum lost with no data to restart -> no ops",
         desired(M3), cluster(M3, wiped=["m2", "m3"]), [], "no-quorum"),
    case("quorum lost: two unreachable -> no ops",
         desired(M3), cluster(M3, unreachable=["m2", "m3"]), [], "no-quorum"),
    case("one dead on an unreachable node -> wait",
         desired(M3), cluster(M3, unreachable=["m3"]), [], "degraded"),
    case("one hung (running, no answer) -> wait",
         desired(M3), cluster(M3, hung=["m3"]), [], "degraded"),
    case("dead member not in the config is removed, not restarted",
         desired(M3), cluster(M3, extra=["x9"], dead=["x9"]),
         [(STOP, "x9"), (REMOVE, "x9")], "member-remove"),
    case("voter added out-of-band, never started, desired -> start it",
         desired(["m1", "m2", "m3", "m4"]), cluster(M3, unstarted=["m4"]),
         [(START, "m4")], "repair"),
    # ---- wiped member: remove, then re-add ---------------------------------
    case("wiped member -> remove",
         desired(M3), cluster(M3, wiped=["m3"]), [(REMOVE, "m3")], "member-remove"),
    case("wiped member with the servers file -> stop traffic, remove",
         desired(M3, apiserver_file=True), cluster(M3, wiped=["m3"], published=M3),
         [(TRAFFIC, "m1,m2"), (REMOVE, "m3")], "member-remove"),
    case("wiped member, traffic already stopped -> remove",
         desired(M3, apiserver_file=True),
         cluster(M3, wiped=["m3"], published=["m1", "m2"]),
         [(REMOVE, "m3")], "member-remove"),
    case("wiped member removed -> add it back, start it",
         desired(M3), cluster(["m1", "m2"], idle=["m3"]),
         [(ADD, "m3"), (START, "m3")], "member-add"),
    case("missing member whose node still has old data -> archive, add, start",
         desired(M3), cluster(["m1", "m2"], dead=["m3"]),
         [(STOP, "m3"), (ADD, "m3"), (START, "m3")], "member-add"),
    case("missing member still running an old incarnation -> stop, add, start",
         desired(M3), cluster(["m1", "m2"], running=["m3"]),
         [(STOP, "m3"), (ADD, "m3"), (START, "m3")], "member-add"),
    # ---- learners -----------------------------------------------------------
    case("learner not started -> start-member (existing)",
         desired(["m1", "m2", "m3", "m4"]), cluster(M3, learner="m4"),
         [(START, "m4")], "member-add"),
    case("learner running, not yet joined -> wait",
         desired(["m1", "m2", "m3", "m4"]), cluster(M3, learner="m4", learner_running=True),
         [], "member-add"),
    case("learner joined and healthy -> promote-member",
         desired(["m1", "m2", "m3", "m4"]), cluster(M3, learner="m4", learner_started=True),
         [(PROMOTE, "m4")], "promote"),
    case("learner joined but unhealthy -> no promotion",
         desired(["m1", "m2", "m3", "m4"]),
         cluster(M3, learner="m4", learner_started=True, learner_healthy=False),
         [], "member-add"),
    case("learner stuck past learner_timeout -> remove (and stop, archive)",
         desired(["m1", "m2", "m3", "m4"], learner_timeout=60),
         cluster(M3, learner="m4", learner_running=True, learner_age=61.0),
         [(REMOVE, "m4"), (STOP, "m4")], "member-remove"),
    case("stuck learner on an unreachable node -> remove without stop",
         desired(["m1", "m2", "m3", "m4"], learner_timeout=60),
         cluster(M3, learner="m4", learner_age=61.0, unreachable=["m4"]),
         [(REMOVE, "m4")], "member-remove"),
    case("learner node unreachable -> wait",
         desired(["m1", "m2", "m3", "m4"]), cluster(M3, learner="m4", unreachable=["m4"]),
         [], "member-add"),
    case("learner crashed before joining, data kept -> restart it on its data",
         desired(["m1", "m2", "m3", "m4"]), cluster(M3, learner="m4", dead=["m4"]),
         [(RESTART, "m4")], "repair"),
    case("learner joined, then its data was wiped -> remove",
         desired(["m1", "m2", "m3", "m4"]),
         cluster(M3, learner="m4", learner_started=True, wiped=["m4"]),
         [(REMOVE, "m4")], "member-remove"),
    case("extra learner (not in the config) -> remove",
         desired(M3), cluster(M3, learner="x9", learner_started=True),
         [(REMOVE, "x9"), (STOP, "x9")], "member-remove"),
    case("extra learner never started -> remove by ID only",
         desired(M3), cluster(M3, learner="x9"),
         [(REMOVE, "")], "member-remove"),
    case("two learners: the one not in the config goes first",
         desired(["m1", "m2", "m3", "m4"]), cluster(M3, learner="m4", learners=["x8"]),
         [(REMOVE, "")], "member-remove"),
    case("no promotion and no learner start while quorum is lost",
         desired(["m1", "m2", "m3", "m4"]),
         cluster(M3, unreachable=["m2", "m3"], learner="m4", learner_started=True),
         [], "no-quorum"),
    # ---- members not in the config -----------------------------------------
    case("out-of-band extra voter -> stop, remove",
         desired(M3), cluster(M3, extra=["x9"]), [(STOP, "x9"), (REMOVE, "x9")],
         "member-remove"),
    case("extra voter on an unreachable node -> remove without stop",
         desired(M3), cluster(M3, extra=["x9"], unreachable=["x9"]),
         [(REMOVE, "x9")], "member-remove"),
    case("extra voter added out-of-band, never started -> remove by ID",
         desired(M3), cluster(M3, unstarted=["x9"]), [(REMOVE, "")], "member-remove"),
    case("two leaving: the unhealthy one goes first",
         desired(M3), cluster(M3, extra=["x8", "x9"], unreachable=["x9"]),
         [(REMOVE, "x9")], "member-remove"),
    case("leaving: an unhealthy member goes before a healthy one listed first",
         desired(["m1", "m2"]), cluster(["m1", "m2", "m3", "x9"], unreachable=["x9"]),
         [(REMOVE, "x9")], "member-remove"),
    # ---- replacement (swap m3 -> m4), one step per cycle --------------------
    case("swap 1: stop traffic, stop m3, remove m3",
         desired(SWAP, apiserver_file=True), cluster(M3, idle=["m4"], published=M3),
         [(TRAFFIC, "m1,m2"), (STOP, "m3"), (REMOVE, "m3")], "member-remove"),
    case("swap 2: add m4, start m4",
         desired(SWAP, apiserver_file=True),
         cluster(["m1", "m2"], idle=["m3", "m4"], published=["m1", "m2"]),
         [(ADD, "m4"), (START, "m4")], "member-add"),
    case("swap 3: promote m4",
         desired(SWAP, apiserver_file=True),
         cluster(["m1", "m2"], learner="m4", learner_started=True, published=["m1", "m2"]),
         [(PROMOTE, "m4")], "promote"),
    case("swap 4: publish the new endpoint list",
         desired(SWAP, apiserver_file=True), cluster(SWAP, published=["m1", "m2"]),
         [(PUBLISH, "m1,m2,m4")], "publish"),
    case("swap 5: steady",
         desired(SWAP, apiserver_file=True), cluster(SWAP, published=SWAP),
         [], "steady"),
    case("swap without a servers file: stop m3, remove m3",
         desired(SWAP), cluster(M3, idle=["m4"]),
         [(STOP, "m3"), (REMOVE, "m3")], "member-remove"),
    # ---- one change at a time, and only when healthy ----------------------
    case("two config changes at once (add two) -> one at a time",
         desired(["m1", "m2", "m3", "m4", "m5"]), cluster(M3, idle=["m4", "m5"]),
         [(ADD, "m4"), (START, "m4")], "member-add"),
    case("second add waits for the first learner",
         desired(["m1", "m2", "m3", "m4", "m5"]),
         cluster(M3, learner="m4", learner_running=True, idle=["m5"]),
         [], "member-add"),
    case("add while a member is unhealthy -> nothing",
         desired(["m1", "m2", "m3", "m4"]), cluster(M3, unreachable=["m2"], idle=["m4"]),
         [], "degraded"),
    case("add while a member is hung -> nothing",
         desired(["m1", "m2", "m3", "m4"]), cluster(M3, hung=["m2"], idle=["m4"]),
         [], "degraded"),
    case("add waits for an unreachable node",
         desired(["m1", "m2", "m3", "m4"]), cluster(M3, unreachable=["m4"]),
         [], "member-add"),
    case("remove that would break quorum -> refused",
         desired(["m1", "m2"]), cluster(M3, unreachable=["m2"]),
         [], "degraded"),
    case("never remove the last member: add the desired one first",
         desired(["m2"]), cluster(["m1"], idle=["m2"]),
         [(ADD, "m2"), (START, "m2")], "member-add"),
    case("never remove the last member, even when its replacement cannot be added",
         desired(["m2"]), cluster(["m1"], unreachable=["m2"]),
         [], "member-add"),
    case("2-member cluster: remove before stop (stopping first breaks quorum)",
         desired(["m1"]), cluster(["m1", "m2"]),
         [(REMOVE, "m2"), (STOP, "m2")], "member-remove"),
    case("4-member cluster shrinking: stop first is safe",
         desired(M3), cluster(["m1", "m2", "m3", "m4"]),
         [(STOP, "m4"), (REMOVE, "m4")], "member-remove"),
    case("3 -> 2: stop, remove",
         desired(["m1", "m2"]), cluster(M3), [(STOP, "m3"), (REMOVE, "m3")],
         "member-remove"),
    case("unreachable node of a leaving member -> remove without stop",
         desired(["m1", "m2"]), cluster(M3, unreachable=["m3"]),
         [(REMOVE, "m3")], "member-remove"),
    case("leaving member dead with data -> archive its data, remove",
         desired(["m1", "m2"]), cluster(M3, dead=["m3"]),
         [(STOP, "m3"), (REMOVE, "m3")], "member-remove"),
    # ---- the etcd servers file ----------------------------------------------
    case("published member turns unhealthy -> stop traffic before restarting",
         desired(M3, apiserver_file=True), cluster(M3, dead=["m2"], published=M3),
         [(TRAFFIC, "m1,m3"), (RESTART, "m2")], "repair"),
    case("published member hung -> stop traffic only (no duplicate publish)",
         desired(M3, apiserver_file=True), cluster(M3, hung=["m2"], published=M3),
         [(TRAFFIC, "m1,m3")], "degraded"),
    case("restarted member healthy again -> publish it",
         desired(M3, apiserver_file=True), cluster(M3, published=["m1", "m3"]),
         [(PUBLISH, "m1,m2,m3")], "publish"),
    case("servers file missing -> publish",
         desired(M3, apiserver_file=True), cluster(M3, published=[]),
         [(PUBLISH, "m1,m2,m3")], "publish"),
    case("servers file in another order -> nothing to do",
         desired(M3, apiserver_file=True), cluster(M3, published=["m3", "m1", "m2"]),
         [], "steady"),
    case("learner is never published",
         desired(["m1", "m2", "m3", "m4"], apiserver_file=True),
         cluster(M3, learner="m4", learner_running=True, published=M3),
         [], "member-add"),
    case("no healthy member -> never an empty list",
         desired(M3, apiserver_file=True),
         cluster(M3, wiped=M3, published=M3), [], "no-quorum"),
    case("nobody answers -> the servers file is left alone",
         desired(M3, apiserver_file=True),
         cluster(no_member_list=True, dead=M3, published=M3),
         [(RESTART, "m1"), (RESTART, "m2"), (RESTART, "m3")], "no-quorum"),
    case("quorum lost -> stop traffic to the dead ones while restarting them",
         desired(M3, apiserver_file=True), cluster(M3, dead=["m2", "m3"], published=M3),
         [(TRAFFIC, "m1"), (RESTART, "m2"), (RESTART, "m3")], "repair"),
    # ---- member certificates --------------------------------------------------
    case("member certificate expiring -> renew it in place",
         desired(M3), cluster(M3, runtimes={"m2": EXPIRING}),
         [(RENEW, "m2")], "certs"),
    case("certificates wrong on two members -> one member at a time",
         desired(M3), cluster(M3, runtimes={"m1": EXPIRING, "m3": EXPIRING}),
         [(RENEW, "m1")], "certs"),
    case("expired peer certs lost quorum -> renew while without quorum",
         desired(M3), cluster(M3, hung=["m2", "m3"],
                              runtimes={"m2": EXPIRING, "m3": EXPIRING}),
         [(RENEW, "m2")], "certs"),
    case("stopped member with bad certs -> restart (the start installs new ones)",
         desired(M3), cluster(M3, dead=["m2"],
                              runtimes={"m2": replace(DEAD, tls_problem="missing")}),
         [(RESTART, "m2")], "repair"),
    case("idle node of a member to add: its missing certs are no reason to wait",
         desired(M3), cluster(["m1", "m2"],
                              runtimes={"m3": replace(IDLE, tls_problem="missing")}),
         [(ADD, "m3"), (START, "m3")], "member-add"),
    case("wiped member with bad certs is removed, not renewed",
         desired(M3), cluster(M3, wiped=["m3"],
                              runtimes={"m3": replace(IDLE, tls_problem="missing")}),
         [(REMOVE, "m3")], "member-remove"),
    case("learner not started with missing certs -> start it (the start installs them)",
         desired(["m1", "m2", "m3", "m4"]),
         cluster(M3, learner="m4", runtimes={"m4": replace(IDLE, tls_problem="missing")}),
         [(START, "m4")], "member-add"),
    case("member leaving with bad certs is not renewed, it is removed",
         desired(["m1", "m2"]), cluster(M3, runtimes={"m3": EXPIRING}),
         [(STOP, "m3"), (REMOVE, "m3")], "member-remove"),
    case("no servers file configured -> no traffic ops",
         desired(M3), cluster(M3, dead=["m2"], published=M3),
         [(RESTART, "m2")], "repair"),
    # ---- alarms: NOSPACE ------------------------------------------------------
    case("NOSPACE, all healthy -> compact, defrag followers then the leader, disarm",
         desired(M3), cluster(M3, alarms=NOSPACE), NOSPACE_PLAN, "nospace"),
    case("NOSPACE raised by several members -> one plan",
         desired(M3), cluster(M3, alarms=[("m1", "NOSPACE"), ("m3", "NOSPACE")]),
         NOSPACE_PLAN, "nospace"),
    case("NOSPACE with a dead member -> restart it first, defragment later",
         desired(M3), cluster(M3, dead=["m2"], alarms=NOSPACE), [(RESTART, "m2")], "repair"),
    case("NOSPACE with a hung member -> no defragmentation, wait",
         desired(M3), cluster(M3, hung=["m3"], alarms=NOSPACE), [], "degraded"),
    case("NOSPACE with a member on an unreachable node -> wait",
         desired(M3), cluster(M3, unreachable=["m2"], alarms=NOSPACE), [], "degraded"),
    case("NOSPACE and a wiped member -> remove it first",
         desired(M3), cluster(M3, wiped=["m3"], alarms=NOSPACE), [(REMOVE, "m3")],
         "member-remove"),
    case("NOSPACE without quorum -> restarts only",
         desired(M3), cluster(M3, dead=["m2", "m3"], alarms=NOSPACE),
         [(RESTART, "m2"), (RESTART, "m3")], "repair"),
    case("NOSPACE with a healthy learner -> the learner is defragmented too",
         desired(["m1", "m2", "m3", "m4"]),
         cluster(M3, learner="m4", learner_started=True, alarms=NOSPACE),
         [(COMPACT, ""), (DEFRAG, "m2"), (DEFRAG, "m3"), (DEFRAG, "m4"), (DEFRAG, "m1"),
          (DISARM, "")], "nospace"),
    case("NOSPACE with a learner not yet started -> start it, defragment later",
         desired(["m1", "m2", "m3", "m4"]), cluster(M3, learner="m4", alarms=NOSPACE),
         [(START, "m4")], "member-add"),
    case("NOSPACE before RBAC: writes would fail anyway",
         desired(M3), cluster(M3, alarms=NOSPACE, rbac_ready=False), NOSPACE_PLAN, "nospace"),
    case("NOSPACE single member -> compact, defrag it, disarm",
         desired(["m1"]), cluster(["m1"], alarms=NOSPACE),
         [(COMPACT, ""), (DEFRAG, "m1"), (DISARM, "")], "nospace"),
    case("NOSPACE and a published member turned unhealthy -> cut traffic, no defrag",
         desired(M3, apiserver_file=True), cluster(M3, hung=["m2"], alarms=NOSPACE,
                                                   published=M3),
         [(TRAFFIC, "m1,m3")], "degraded"),
    # ---- alarms: CORRUPT ------------------------------------------------------
    case("CORRUPT -> hands off, even with a dead member",
         desired(M3), cluster(M3, dead=["m2"], alarms=[("m3", "CORRUPT")]), [], "corrupt"),
    case("CORRUPT raised cluster-wide (member ID 0) -> hands off",
         desired(M3), cluster(M3, alarms=[("", "CORRUPT")]), [], "corrupt"),
    case("CORRUPT and NOSPACE -> nothing is compacted or defragmented",
         desired(M3), cluster(M3, alarms=[("m1", "NOSPACE"), ("m2", "CORRUPT")]), [],
         "corrupt"),
    case("CORRUPT -> no membership change from the config either",
         desired(SWAP, apiserver_file=True),
         cluster(M3, idle=["m4"], published=M3, alarms=[("m1", "CORRUPT")]), [], "corrupt"),
    case("CORRUPT -> the servers file is not touched",
         desired(M3, apiserver_file=True),
         cluster(M3, hung=["m2"], published=M3, alarms=[("m1", "CORRUPT")]), [], "corrupt"),
    # ---- pause ------------------------------------------------------------------
    case("paused by config -> a dead member stays down",
         desired(M3, paused=True), cluster(M3, dead=["m2"]), [], "paused"),
    case("paused by command -> a dead member stays down",
         desired(M3), cluster(M3, dead=["m2"], paused="ckeetcd pause"), [], "paused"),
    case("paused -> no bootstrap",
         desired(M3), cluster(not_formed=True, idle=M3, paused="ckeetcd pause"), [], "paused"),
    case("paused -> no restarts while nobody answers",
         desired(M3, paused=True), cluster(no_member_list=True, dead=M3), [], "paused"),
    case("paused -> the servers file is not cut",
         desired(M3, apiserver_file=True, paused=True),
         cluster(M3, hung=["m2"], published=M3), [], "paused"),
    case("paused -> no swap",
         desired(SWAP, paused=True), cluster(M3, idle=["m4"]), [], "paused"),
    case("paused -> NOSPACE is not cleared",
         desired(M3), cluster(M3, alarms=NOSPACE, paused="ckeetcd pause"), [], "paused"),
    case("paused -> no certificate renewal",
         desired(M3, paused=True), cluster(M3, runtimes={"m2": EXPIRING}), [], "paused"),
    case("paused and CORRUPT -> corrupt is what shows",
         desired(M3, paused=True), cluster(M3, alarms=[("m1", "CORRUPT")]), [], "corrupt"),
    # ---- a restore at work (RESTORING marker in a member dir, from any node) ------
    case("restoring -> no restart while nobody answers",
         desired(M3), cluster(no_member_list=True, dead=M3,
                              runtimes={"m1": RESTORING_DEAD}), [], "restoring"),
    case("restoring -> no bootstrap of empty member dirs",
         desired(M3), cluster(no_member_list=True, wiped=M3,
                              runtimes={"m2": RESTORING_WIPED}), [], "restoring"),
    case("restoring -> no repair of a restored member that is not up yet",
         desired(M3, apiserver_file=True),
         cluster(M3, dead=["m3"], published=M3, runtimes={"m3": RESTORING_DEAD}), [],
         "restoring"),
    case("restoring beats CORRUPT and pause: the restore is what shows",
         desired(M3, paused=True),
         cluster(M3, alarms=[("m1", "CORRUPT")], runtimes={"m1": RESTORING_DEAD}), [],
         "restoring"),
    # ---- scheduled defragmentation -----------------------------------------------
    case("fragmented follower -> defragment it",
         desired(M3, **FRAG), cluster(M3, db={"m2": (1000, 400)}), [(DEFRAG, "m2")],
         "defrag"),
    case("fragmented follower and leader -> the follower first",
         desired(M3, **FRAG), cluster(M3, db={"m1": (1000, 100), "m3": (1000, 300)}),
         [(DEFRAG, "m3")], "defrag"),
    case("only the leader fragmented -> defragment the leader",
         desired(M3, **FRAG), cluster(M3, db={"m1": (1000, 100)}), [(DEFRAG, "m1")],
         "defrag"),
    case("two fragmented followers -> one member per decision",
         desired(M3, **FRAG), cluster(M3, db={"m2": (1000, 100), "m3": (1000, 100)}),
         [(DEFRAG, "m2")], "defrag"),
    case("fragmentation at the threshold -> steady",
         desired(M3, **FRAG), cluster(M3, db={"m2": (1000, 500)}), [], "steady"),
    case("fragmented but small database -> steady",
         desired(M3, defrag_threshold=0.5, defrag_min_db_size=10_000),
         cluster(M3, db={"m2": (1000, 100)}), [], "steady"),
    case("scheduled defragmentation off -> steady",
         desired(M3), cluster(M3, db={"m2": (1000, 100)}), [], "steady"),
    case("fragmented while a member is hung -> no defragmentation",
         desired(M3, **FRAG), cluster(M3, hung=["m3"], db={"m2": (1000, 100)}), [],
         "degraded"),
    case("fragmented while a member is dead -> restart it, no defragmentation",
         desired(M3, **FRAG), cluster(M3, dead=["m3"], db={"m2": (1000, 100)}),
         [(RESTART, "m3")], "repair"),
    case("fragmented while a learner is joining -> the learner first",
         desired(["m1", "m2", "m3", "m4"], **FRAG),
         cluster(M3, learner="m4", learner_running=True, db={"m2": (1000, 100)}), [],
         "member-add"),
    case("fragmented during a swap -> the membership change first",
         desired(SWAP, **FRAG), cluster(M3, idle=["m4"], db={"m2": (1000, 100)}),
         [(STOP, "m3"), (REMOVE, "m3")], "member-remove"),
    case("fragmented and the servers file lacks a member -> publish first",
         desired(M3, apiserver_file=True, **FRAG),
         cluster(M3, published=["m1", "m2"], db={"m2": (1000, 100)}),
         [(PUBLISH, "m1,m2,m3")], "publish"),
]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_ladder(c: Case) -> None:
    decision = decide(c.desired, c.observed)
    assert steps(decision) == c.ops, decision.reason
    if c.phase is not None:
        assert decision.phase == c.phase, decision.reason


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


def test_defrag_ops_name_the_member_its_id_and_why() -> None:
    nospace = decide(desired(M3), cluster(M3, alarms=NOSPACE))
    for op in nospace.ops:
        if op.kind == DEFRAG:
            assert (op.member_id, op.client_url, op.detail) == (
                mid(op.member), client_url(op.member), "nospace")
    assert (nospace.ops[0].detail, nospace.ops[-1].detail) == ("nospace", "NOSPACE")
    scheduled = decide(desired(M3, **FRAG), cluster(M3, db={"m2": (1000, 100)}))
    assert scheduled.ops[0].detail == "fragmented" and "90%" in scheduled.reason


# ---- op fields that matter to the runner -------------------------------------
def test_fresh_bootstrap_is_new_with_the_whole_initial_cluster() -> None:
    decision = decide(desired(M3), cluster(not_formed=True, idle=M3))
    initial = tuple((n, peer_url(n)) for n in M3)
    for op in decision.ops:
        assert op.initial_state == "new"
        assert op.initial_cluster == initial
        assert op.peer_url == peer_url(op.member)
        assert op.client_url == client_url(op.member)


def test_restart_is_existing_and_carries_the_member_id() -> None:
    op = decide(desired(M3), cluster(M3, dead=["m2"])).ops[0]
    assert (op.initial_state, op.member_id) == ("existing", mid("m2"))
    assert op.initial_cluster == tuple((n, peer_url(n)) for n in M3)


def test_joining_member_lists_every_member_in_its_initial_cluster() -> None:
    """etcd checks that the joining member's initial cluster has exactly the
    members of the live cluster (count and peer URLs): a learner or an
    unstarted member missing from it makes etcd exit ("member count is unequal")."""
    d = desired(["m1", "m2", "m3", "m4"])
    start = op_for(decide(d, cluster(M3, learner="m4")), "start-member")
    assert start.initial_state == "existing"
    assert start.initial_cluster == tuple((n, peer_url(n)) for n in ["m1", "m2", "m3", "m4"])

    add = decide(desired(SWAP), cluster(["m1", "m2"], idle=["m4"]))
    start = op_for(add, "start-member", "m4")
    assert start.initial_cluster == (("m1", peer_url("m1")), ("m2", peer_url("m2")),
                                     ("m4", peer_url("m4")))
    assert op_for(add, "add-member").peer_url == peer_url("m4")


def test_unstarted_bootstrap_member_starts_existing_with_all_members() -> None:
    o = cluster(["m1", "m2"], bootstrap_unstarted=["m3"], formed=False)
    op = decide(desired(M3), o).ops[0]
    assert (op.kind, op.initial_state) == ("start-member", "existing")
    assert op.initial_cluster == tuple((n, peer_url(n)) for n in M3)


def test_out_of_band_unstarted_members_get_unique_names_in_the_initial_cluster() -> None:
    d = desired(["m1", "m2", "m3", "m4"])
    o = cluster(M3, unstarted=["m4", "x9"])
    op = op_for(decide(d, o), "start-member")
    names = [n for n, _ in op.initial_cluster]
    assert len(names) == len(set(names)) == 5
    assert ("m4", peer_url("m4")) in op.initial_cluster
    assert all(names)


def test_renewal_carries_what_the_op_needs() -> None:
    op = decide(desired(M3), cluster(M3, runtimes={"m2": EXPIRING})).ops[0]
    assert (op.member_id, op.client_url, op.detail) == (mid("m2"), client_url("m2"),
                                                        "expires in 3600s")


def test_remove_and_promote_carry_member_ids() -> None:
    remove = op_for(decide(desired(M3), cluster(M3, extra=["x9"])), "remove-member")
    assert (remove.member_id, remove.peer_url) == (mid("x9"), peer_url("x9"))
    promote = decide(desired(["m1", "m2", "m3", "m4"]),
                     cluster(M3, learner="m4", learner_started=True)).ops[0]
    assert promote.member_id == mid("m4")
    unnamed = decide(desired(M3), cluster(M3, learner="x9")).ops[0]
    assert unnamed.member_id == mid("x9")


def test_stops_that_leave_the_cluster_archive_data() -> None:
    for o in (cluster(M3, extra=["x9"]), cluster(["m1", "x9"])):
        d = desired(M3) if o.members and len(o.members) == 4 else desired(["m1"])
        assert op_for(decide(d, o), "stop-member").detail == "archive-data"


def test_decide_is_deterministic_and_leaves_its_inputs_alone() -> None:
    d, o = desired(SWAP, apiserver_file=True), cluster(M3, idle=["m4"], published=M3)
    before = (d, o, dict(o.runtimes), dict(o.health))
    assert decide(d, o) == decide(d, o)
    assert (d, o, dict(o.runtimes), dict(o.health)) == before


def test_unknown_runtime_counts_as_unreachable() -> None:
    o = cluster(["m1", "m2"], runtimes={})
    assert decide(desired(M3), o).ops == ()
    o = cluster(["m1", "m2"], runtimes={"m3": Runtime(reachable=True)})
    assert steps(decide(desired(M3), o)) == [("add-member", "m3"), ("start-member", "m3")]

"""The soak's checker and figures on hand-made histories: each anomaly is caught.

Pure: no etcd. tests/test_soak.py runs the checker on a real soak.
"""

from __future__ import annotations

import random
import tomllib
from collections import Counter

import pytest

from tests.soak import checker, figures
from tests.soak.checker import Stored, Window
from tests.soak.deck import FAULT_KINDS, schedule
from tests.soak.history import FAILED, INDETERMINATE, OK, OpRecord, classify
from tests.soak.rolling import etcd_keys, with_etcd_key


def put(client: str, start: float, end: float, key: str, rev: int = 0,
        outcome: str = OK) -> OpRecord:
    return OpRecord(client, "put", start, end, outcome, key=key, value=f"v-{key}",
                    revision=rev if outcome == OK else 0)


def read(client: str, start: float, end: float, rev: int, count: int,
         outcome: str = OK) -> OpRecord:
    return OpRecord(client, "read", start, end, outcome, revision=rev, count=count)


def stored(*items: tuple[str, int]) -> dict[str, Stored]:
    return {k: Stored(f"v-{k}", rev, rev, 1) for k, rev in items}


@pytest.mark.parametrize(("code", "details", "want"), [
    ("OK", "", OK),
    ("PERMISSION_DENIED", "etcdserver: permission denied", FAILED),
    ("RESOURCE_EXHAUSTED", "etcdserver: mvcc: database space exceeded", FAILED),
    ("INVALID_ARGUMENT", "etcdserver: request is too large", FAILED),
    ("UNAVAILABLE", "failed to connect to all addresses; last error: UNKNOWN", FAILED),
    ("UNAVAILABLE", "etcdserver: rpc not supported for learner", FAILED),
    ("UNKNOWN", "raft proposal dropped", FAILED),
    # may have been applied: indeterminate
    ("DEADLINE_EXCEEDED", "Deadline Exceeded", INDETERMINATE),
    ("UNAVAILABLE", "Stream removed (recvmsg:Connection reset by peer (104))", INDETERMINATE),
    ("UNAVAILABLE", "etcdserver: request timed out", INDETERMINATE),
    ("UNAVAILABLE", "etcdserver: leader changed", INDETERMINATE),
    ("UNAVAILABLE", "etcdserver: request timed out, possibly due to previous leader failure",
     INDETERMINATE),
    ("CANCELLED", "", INDETERMINATE),
    ("UNKNOWN", "something new", INDETERMINATE),
])
def test_classify(code: str, details: str, want: str) -> None:
    assert classify(code, details) == want


def test_writes_all_good() -> None:
    h = [put("w0", 0, 1, "a", 2), put("w0", 1, 2, "b", outcome=FAILED),
         put("w0", 2, 3, "c", outcome=INDETERMINATE), put("w0", 3, 4, "d", outcome=INDETERMINATE)]
    v = checker.check_writes(h, stored(("a", 2), ("c", 3)))
    assert v.violations == []
    assert (v.acked, v.failed, v.indeterminate, v.indeterminate_present) == (1, 1, 2, 1)


@pytest.mark.parametrize(("history", "store", "field"), [
    ([put("w0", 0, 1, "a", 2)], stored(), "lost"),
    ([put("w0", 0, 1, "a", 2)], {"a": Stored("other", 2, 2, 1)}, "wrong_value"),
    ([put("w0", 0, 1, "a", 2)], stored(("a", 3)), "wrong_revision"),
    ([put("w0", 0, 1, "a", outcome=FAILED)], stored(("a", 2)), "failed_present"),
    ([], stored(("ghost", 2)), "unknown_present"),
    ([put("w0", 0, 1, "a", 2)], {"a": Stored("v-a", 2, 2, 2)}, "rewritten"),
])
def test_writes_anomalies(history: list[OpRecord], store: dict[str, Stored], field: str) -> None:
    v = checker.check_writes(history, store)
    assert getattr(v, field) != []
    assert any(s.startswith(field) for s in v.violations)


def test_order_all_good() -> None:
    h = [put("w0", 0.0, 0.1, "a", 2), read("r0", 0.05, 0.2, 2, 1),
         put("w1", 0.15, 0.3, "b", 3), read("r0", 0.3, 0.4, 3, 2),
         read("r1", 0.25, 0.35, 2, 1)]  # overlaps b's put: may or may not see it
    v = checker.check_order(h, stored(("a", 2), ("b", 3)))
    assert v.violations == [] and v.reads == 3


@pytest.mark.parametrize(("history", "field"), [
    # a reader goes back in time
    ([put("w0", 0, 0.1, "a", 2), put("w0", 0.2, 0.3, "b", 3),
      read("r0", 0.4, 0.5, 3, 2), read("r0", 0.6, 0.7, 2, 1)], "client_regressions"),
    # a read that starts after b's put was acknowledged does not see it
    ([put("w0", 0, 0.1, "a", 2), put("w0", 0.2, 0.3, "b", 3),
      read("r1", 0.4, 0.5, 2, 1)], "realtime_violations"),
    # a read's count does not match the store at its revision
    ([put("w0", 0, 0.1, "a", 2), put("w0", 0.2, 0.3, "b", 3),
      read("r1", 0.4, 0.5, 3, 1)], "count_mismatches"),
])
def test_order_anomalies(history: list[OpRecord], field: str) -> None:
    v = checker.check_order(history, stored(("a", 2), ("b", 3)))
    assert getattr(v, field) != [], v
    assert any(s.startswith(field) for s in v.violations)


def test_indeterminate_put_applied_after_its_client_gave_up_is_fine() -> None:
    # b timed out at 0.5; applied later (revision 4) than a put that started after
    h = [put("w0", 0.0, 0.5, "b", outcome=INDETERMINATE), put("w1", 0.6, 0.7, "c", 3),
         read("r0", 0.8, 0.9, 4, 2)]
    v = checker.check_order(h, stored(("c", 3), ("b", 4)))
    assert v.violations == []


def test_indeterminate_put_applied_before_it_started_is_caught() -> None:
    h = [put("w1", 0.0, 0.1, "c", 5), put("w0", 0.2, 0.5, "b", outcome=INDETERMINATE)]
    v = checker.check_order(h, stored(("c", 5), ("b", 4)))
    assert v.realtime_violations != []


@pytest.mark.parametrize(("acks", "window", "want"), [
    ([1.0, 2.0, 5.0, 6.0], (3.0, 4.0), 3.0),   # one gap spans the window
    ([1.0, 2.0, 5.0, 6.0], (2.5, 5.5), 3.0),
    ([1.0, 2.0, 5.0, 6.0], (5.5, 5.8), 1.0),
    ([1.0, 2.0, 5.0, 6.0], (0.0, 1.5), 1.0),   # before the first ack: from the first
    ([1.0, 1.1, 1.2], (1.15, 1.16), 0.1),
    ([], (0.0, 1.0), 0.0),
])
def test_longest_gap(acks: list[float], window: tuple[float, float], want: float) -> None:
    assert figures.longest_gap(acks, *window) == pytest.approx(want)


QUORUM_LOST = {"event": "quorum_lost", "level": "error", "timestamp": "2026-01-01T00:00:10Z"}
T10 = 1767225610.0  # 2026-01-01T00:00:10Z
SWAP_AND_FAULT = {**QUORUM_LOST, "voters": 3, "running_voters": 1}
FAULT_ON_M3 = Window(("swap-under-fault", "disk-full"), T10 - 1, T10, "m1", ("m3",))


@pytest.mark.parametrize(("event", "windows", "want"), [
    (QUORUM_LOST, [Window(("kill-quorum", ""), T10 - 1, T10 + 1)], "kill-quorum"),
    (QUORUM_LOST, [Window(("swap-under-fault", "kill-quorum"), T10 - 1, T10)], "kill-quorum"),
    (QUORUM_LOST, [Window(("kill-quorum", ""), T10 - 1, T10 - checker.LATE - 1)], None),
    (QUORUM_LOST, [Window(("kill-leader", ""), T10 - 1, T10 + 1)], None),
    (QUORUM_LOST, [], None),
    # a swap's two-voter moment (remove before add) with a member fault: a real loss
    ({**QUORUM_LOST, "voters": 2}, [Window(("swap-under-fault", "disk-full"), T10 - 1, T10)],
     "swap-under-fault (two voters)"),
    ({**QUORUM_LOST, "voters": 3}, [Window(("swap-under-fault", "disk-full"), T10 - 1, T10)],
     None),
    ({**QUORUM_LOST, "voters": 2}, [Window(("daemon-killed-mid-swap", ""), T10 - 1, T10)],
     None),
    # three voters: the swap stopped the leaving m1 (data archived), the fault took m3
    ({**SWAP_AND_FAULT, "stopped_with_data": ["m3"]}, [FAULT_ON_M3],
     "swap-under-fault (leaving member stopped, fault target down)"),
    ({**SWAP_AND_FAULT, "stopped_with_data": ["m3", "m1"]}, [FAULT_ON_M3],
     "swap-under-fault (leaving member stopped, fault target down)"),
    # ... but not when a member the fault did not hit is down too, nor two running
    ({**SWAP_AND_FAULT, "stopped_with_data": ["m2"]}, [FAULT_ON_M3], None),
    ({**SWAP_AND_FAULT, "stopped_with_data": ["m3", "m2"]}, [FAULT_ON_M3], None),
    ({**SWAP_AND_FAULT, "stopped_with_data": ["m3"], "running_voters": 2}, [FAULT_ON_M3],
     None),
    ({**SWAP_AND_FAULT, "stopped_with_data": ["m3"]},
     [Window(("swap", ""), T10 - 1, T10, "m1", ("m3",))], None),
    ({**SWAP_AND_FAULT, "stopped_with_data": []}, [FAULT_ON_M3], None),
    ({**QUORUM_LOST, "exception": "Traceback ..."}, [Window(("kill-quorum", ""), T10 - 1,
                                                           T10 + 1)], None),
])
def test_explained_errors(event: dict[str, str], windows: list[Window], want: str | None,
                          ) -> None:
    assert checker.explain(event, windows) == want


def test_log_check_lists_every_error_and_tracebacks() -> None:
    lines = ['{"event": "cycle", "level": "info", "timestamp": "2026-01-01T00:00:10Z"}',
             '{"event": "quorum_lost", "level": "error", "timestamp": "2026-01-01T00:00:10Z"}',
             '{"event": "side_task_failed", "level": "error", "timestamp": "2026-01-01T00:00:10Z"}',
             "Traceback (most recent call last):", "",
             '{"event": "quorum_in_doubt", "level": "warning", "timestamp": "2026-01-01T00:01Z"}']
    v = checker.check_log(lines, [Window(("kill-quorum", ""), T10 - 1, T10 + 1)])
    assert [e["event"] for e in v.doubts] == ["quorum_in_doubt"]
    assert [e["event"] for e in v.errors] == ["quorum_lost", "side_task_failed", "raw"]
    assert [e["event"] for e in v.unexplained] == ["side_task_failed", "raw"]


def test_rbac_diff() -> None:
    before = {"user soak": "User: soak\nRoles: soak\n", "role soak": "/soak/"}
    assert checker.check_rbac(before, dict(before)) == []
    assert checker.check_rbac(before, {"user soak": before["user soak"]}) != []


def test_schedule_is_balanced_and_seeded() -> None:
    kinds = [f.kind for f in schedule(random.Random(7), 2 * len(FAULT_KINDS) + 3)]
    counts = Counter(kinds)
    assert set(counts) == set(FAULT_KINDS)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert kinds == [f.kind for f in schedule(random.Random(7), len(kinds))]
    assert kinds != [f.kind for f in schedule(random.Random(8), len(kinds))]


def test_every_prefix_of_the_schedule_is_balanced() -> None:
    """A long run cut short by its time limit still has every kind +-1 (a run of 20 per
    kind has exactly 20 each)."""
    kinds = [f.kind for f in schedule(random.Random(1), 20 * len(FAULT_KINDS))]
    assert Counter(kinds) == dict.fromkeys(FAULT_KINDS, 20)
    for n in range(1, len(kinds)):
        counts = Counter(kinds[:n])
        assert max(counts.values()) - min(counts.get(k, 0) for k in FAULT_KINDS) <= 1, n
    assert "daemon-killed-mid-rolling" in FAULT_KINDS


@pytest.mark.parametrize(("extra", "key", "raw", "want"), [
    ('[etcd]\nbinary = "/e"\n\n[apiserver]\nx = 1\n', "heartbeat_interval_ms", "150",
     {"binary": '"/e"', "heartbeat_interval_ms": "150"}),
    ('[etcd]\nheartbeat_interval_ms = 150\n', "heartbeat_interval_ms", "100",
     {"heartbeat_interval_ms": "100"}),
    ('[apiserver]\nx = 1\n', "binary", '"/f"', {"binary": '"/f"'}),
])
def test_rolling_fault_edits_only_the_etcd_section(extra: str, key: str, raw: str,
                                                   want: dict[str, str]) -> None:
    out = with_etcd_key(extra, key, raw)
    assert etcd_keys(out) == want
    assert tomllib.loads(out).get("apiserver") == tomllib.loads(extra).get("apiserver")


def test_targets() -> None:
    kinds = {"kill-follower": {"write_stall_s": {"n": 2, "max": 0.05}},
             "hang-follower": {"write_stall_s": {"n": 2, "max": 0.2}},
             "kill-leader": {"write_stall_s": {"n": 2, "max": 1.4}},
             "swap": {"write_stall_s": {"n": 2, "max": 0.1}},
             "daemon-killed-mid-swap": {"write_stall_s": {"n": 2, "max": 0.12}}}
    t = figures.targets(kinds, 1.0, lost=0, stale=0, failures=0, noise=0.03)
    assert {k: v["met"] for k, v in t.items()} == {
        "no_acknowledged_write_lost": True, "no_stale_read": True,
        "every_fault_recovered": True, "kill-follower_stall_max": True,
        "hang-follower_stall_max": False, "kill-leader_stall_max": True,
        "daemon-killed-mid-swap_stall_max": True}


# ---- across a restore -------------------------------------------------------------------
# A snapshot at revision 10; puts up to revision 13 were acknowledged after it; the
# restore was done at t=20; the restored cluster starts at 10 + BUMP.
BUMP = 1_000_000_000
RB = checker.Rollback(revision=10, end=20.0)


def test_a_restore_drops_what_came_after_its_snapshot_and_nothing_else() -> None:
    h = [put("w0", 0, 1, "a", 9), put("w0", 1, 2, "b", 10),    # in the snapshot
         put("w0", 3, 4, "c", 12), put("w1", 3, 5, "d", 13),   # after it: dropped
         put("w1", 6, 7, "e", outcome=INDETERMINATE),          # maybe applied, then dropped
         read("r0", 4, 5, 12, 3),                              # a, b, c
         read("r0", 5, 6, 13, 4),                              # and d
         read("r0", 8, 9, 14, 5),                              # and e, applied at 14
         put("w0", 21, 22, "f", BUMP + 11), read("r0", 22, 23, BUMP + 11, 3)]
    final = stored(("a", 9), ("b", 10), ("f", BUMP + 11))
    w = checker.check_writes(h, final, (RB,))
    assert w.violations == [] and w.rolled_back == ["c", "d"] and w.lost == []
    o = checker.check_order(h, final, (RB,))
    assert o.violations == [], o.violations
    # ... the same history judged as if no restore had happened: lost writes, bad counts
    assert checker.check_writes(h, final).lost == ["c", "d"]
    assert checker.check_order(h, final).count_mismatches != []


@pytest.mark.parametrize(("case", "h", "final", "want"), [
    ("a put from before the snapshot went missing",
     [put("w0", 0, 1, "a", 9)], stored(), "lost: 1"),
    ("a dropped put is still there",
     [put("w0", 3, 4, "c", 12)], stored(("c", 12)), "rolled_back_present: 1"),
    ("revisions went back: restored without --bump-revision",
     [put("w0", 3, 4, "c", 12), put("w0", 21, 22, "f", 11)], stored(("f", 11)),
     "client_regressions: 1"),
    ("a read before the restore counted too few",
     [put("w0", 0, 1, "a", 9), put("w0", 3, 4, "c", 12), read("r0", 4, 5, 12, 1)],
     stored(("a", 9)), "count_mismatches: 1"),
    ("a read before the restore counted too many",
     [put("w0", 0, 1, "a", 9), put("w0", 3, 4, "c", 12), read("r0", 4, 5, 12, 3)],
     stored(("a", 9)), "count_mismatches: 1"),
])
def test_what_a_restore_does_not_excuse(case: str, h: list[OpRecord], final: dict[str, Stored],
                                        want: str) -> None:
    found = [*checker.check_writes(h, final, (RB,)).violations,
             *checker.check_order(h, final, (RB,)).violations]
    assert any(v.startswith(want) for v in found), (case, found)


def test_each_restore_drops_only_its_own_epoch() -> None:
    second = checker.Rollback(revision=BUMP + 12, end=40.0)
    h = [put("w0", 3, 4, "c", 12),                              # dropped by the first
         put("w0", 21, 22, "f", BUMP + 11), put("w0", 23, 24, "g", BUMP + 13),  # g: second
         put("w0", 41, 42, "h", 2 * BUMP + 13)]
    final = stored(("f", BUMP + 11), ("h", 2 * BUMP + 13))
    w = checker.check_writes(h, final, (second, RB))
    assert w.violations == [] and w.rolled_back == ["c", "g"]

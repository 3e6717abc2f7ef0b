"""Pure rules about members' lives: which archives go, when a member may start again."""

from __future__ import annotations

import itertools
import json
from collections.abc import MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from ckeetcd.core import restarts
from ckeetcd.core.decide import decide
from ckeetcd.core.model import Desired, MemberExit, Observed, Runtime
from ckeetcd.core.restarts import Starts
from ckeetcd.nodes.base import (
    exit_of,
    exit_reason,
    is_archive,
    log_tail,
    prunable,
    restore_bump,
    restore_bump_flags,
    restored_start,
)
from ckeetcd.support.startbook import StartBook, iso
from tests.builders import DEAD, HEALTHY, IDLE, cluster, desired, steps
from tests.harness import named

A1 = "data.removed-20240101T000000.000001Z"
A2 = "data.removed-20240101T000000.000002Z"
A3 = "data.removed-20250301T120000.000000Z"
RESTORE = "data.before-restore-20200101T000000.000000Z"


@pytest.mark.parametrize(("names", "keep", "doomed"), [
    ([], 2, []),
    ([A1], 2, []),
    ([A1, A2], 2, []),
    ([A3, A1, A2], 2, [A1]),  # by stamp, not by listing order
    ([A3, A1, A2], 1, [A1, A2]),
    ([A3, A1, A2], 0, [A1, A2, A3]),
    ([A1, A2], 5, []),
    # never: restore archives, a restore's staging dir, the live data dir, look-alikes
    ([RESTORE, "data", "data.restoring", "data.removed-x", "data.removed-script-1",
      f"{A1}.bak", f"x{A1}", A1], 0, [A1]),
    ([A1], -1, [A1]),  # a negative keep keeps none, never more than exist
])
def test_prunable_keeps_the_newest_removed_archives(names: list[str], keep: int,
                                                    doomed: list[str]) -> None:
    assert prunable(names, keep) == doomed


@pytest.mark.parametrize(("name", "archive"), [
    (A1, True), (RESTORE, True), ("data", False), ("data.restoring", False),
    ("etcd.log", False), ("tls", False),
])
def test_what_counts_as_an_archive(name: str, archive: bool) -> None:
    assert is_archive(name) is archive


# ---- restart back-off (ckeetcd.core.restarts) ---------------------------------------------
@pytest.mark.parametrize(("count", "wait"), [
    (0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (8, 128.0), (9, 256.0), (10, 300.0),
    (11, 300.0), (10**6, 300.0), (-1, 0.0),
])
def test_delay_doubles_from_one_second_to_five_minutes(count: int, wait: float) -> None:
    assert restarts.delay(count) == wait


T = 1_000_000.0


@pytest.mark.parametrize(("s", "now", "until"), [
    (Starts(), T, None),  # never started: free
    (Starts(count=1, last=T), T, T + 1),  # just started once: the second waits 1 s
    (Starts(count=1, last=T), T + 0.999, T + 1),
    (Starts(count=1, last=T), T + 1, None),
    (Starts(count=3, last=T), T + 3.9, T + 4),
    (Starts(count=3, last=T), T + 4, None),
    (Starts(count=20, last=T), T + 299, T + 300),  # capped
    (Starts(count=20, last=T), T + 300, None),
    (Starts(count=0, last=T), T, None),  # a new streak: the first start is never held
    (Starts(count=5, last=T + 50), T, None),  # the clock went back: no wedge
])
def test_held_until(s: Starts, now: float, until: float | None) -> None:
    assert restarts.held_until(s, now) == until


@pytest.mark.parametrize(("s", "now", "healthy", "after"), [
    # healthy runs start on the first healthy observation...
    (Starts(count=2, last=T), T + 1, True, Starts(count=2, last=T, healthy_since=T + 1)),
    # ... and a minute of them begins a new streak
    (Starts(count=2, last=T, healthy_since=T + 1), T + 60.9, True,
     Starts(count=2, last=T, healthy_since=T + 1)),
    (Starts(count=2, last=T, healthy_since=T + 1), T + 61, True,
     Starts(count=0, last=T, healthy_since=T + 1)),
    (Starts(count=9, last=T, healthy_since=T + 1), T + 3600, True,
     Starts(count=0, last=T, healthy_since=T + 1)),
    # an unhealthy observation breaks the run
    (Starts(count=2, last=T, healthy_since=T + 1), T + 30, False, Starts(count=2, last=T)),
    (Starts(count=2, last=T), T + 30, False, Starts(count=2, last=T)),
    # a healthy-since in the future (clock set back) starts the run again
    (Starts(count=2, last=T, healthy_since=T + 100), T + 10, True,
     Starts(count=2, last=T, healthy_since=T + 10)),
    # nothing to reset on a fresh streak
    (Starts(), T, True, Starts(healthy_since=T)),
])
def test_seen(s: Starts, now: float, healthy: bool, after: Starts) -> None:
    assert restarts.seen(s, now, healthy) == after


def test_a_start_counts_and_ends_a_healthy_run() -> None:
    s = Starts(count=2, last=T, healthy_since=T + 1)
    assert restarts.started(s, T + 10) == Starts(count=3, last=T + 10)


def test_a_member_killed_after_a_healthy_minute_restarts_at_once_and_then_backs_off() -> None:
    s = restarts.started(Starts(), T)  # the bootstrap start
    s = restarts.seen(s, T + 1, True)
    s = restarts.seen(s, T + 70, True)  # healthy for a while: a new streak
    assert s.count == 0 and restarts.held_until(s, T + 70) is None
    s = restarts.started(s, T + 70)  # killed: restarted at once
    assert restarts.held_until(s, T + 70.5) == T + 71  # died again at once: waits 1 s


@given(st.lists(st.tuples(st.floats(0.001, 400.0), st.booleans(), st.booleans()),
                max_size=200))
def test_starts_made_whenever_allowed_are_never_closer_than_a_second(
        steps: list[tuple[float, bool, bool]]) -> None:
    """Whatever the member does (healthy or not, exiting or not), a loop that starts it
    whenever the rule allows never starts it twice within BACKOFF_FIRST seconds; and
    while it never stays healthy for a minute, the gaps never shrink."""
    now, s, made = T, Starts(), [T]
    s = restarts.started(s, now)
    for dt_, healthy, wants_start in steps:
        now += dt_
        s = restarts.seen(s, now, healthy)
        if wants_start and restarts.held_until(s, now) is None:
            s = restarts.started(s, now)
            made.append(now)
    gaps = [b - a for a, b in itertools.pairwise(made)]
    assert all(g >= restarts.BACKOFF_FIRST for g in gaps), gaps


def test_a_crash_loop_of_an_hour_makes_few_starts() -> None:
    """Started whenever allowed and never healthy: 1, 2, 4 ... 256 s, then every 300 s."""
    now, s, made = T, Starts(), 0
    while now < T + 3600:
        if restarts.held_until(s, now) is None:
            s = restarts.started(s, now)
            made += 1
        now += 0.01
    # at 0, 1, 3, 7, ... 255, 511 s (ten starts), then every 300 s: 811 ... 3511
    assert made == 20


# ---- decide() respects the holds ------------------------------------------------------
HELD_AT = 1_800_000_000.0  # 2027-01-15T08:00:00Z
HELD_DEAD = replace(DEAD, held_until=HELD_AT, starts=4, last_exit="exit status 2")
HELD_IDLE = replace(IDLE, held_until=HELD_AT, starts=2, last_exit="exit status 1")
HELD_RUNNING = replace(HEALTHY, held_until=HELD_AT, starts=1)
M3 = ["m1", "m2", "m3"]
START, RESTART, ADD, RBAC = "start-member", "restart-member", "add-member", "ensure-rbac"


@pytest.mark.parametrize(("d", "o", "ops", "phase"), [
    pytest.param(desired(M3), cluster(M3, dead=["m2"], runtimes={"m2": HELD_DEAD}),
                 [], "backoff", id="a held member is not restarted"),
    pytest.param(desired(M3), cluster(M3, dead=["m2", "m3"], runtimes={"m2": HELD_DEAD}),
                 [(RESTART, "m3")], "repair", id="the others are"),
    pytest.param(desired(M3), cluster(M3, dead=["m2", "m3"],
                                      runtimes={"m2": HELD_DEAD, "m3": HELD_DEAD}),
                 [], "backoff", id="no quorum, every stopped member held"),
    pytest.param(desired(M3), cluster(no_member_list=True, formed=True, dead=M3,
                                      runtimes={"m1": HELD_DEAD}),
                 [(RESTART, "m2"), (RESTART, "m3")], "no-quorum",
                 id="nobody answers: the held one waits"),
    pytest.param(desired(M3), cluster(not_formed=True, idle=M3, runtimes={"m2": HELD_IDLE}),
                 [(START, "m1"), (START, "m3")], "bootstrap", id="bootstrap: the held one waits"),
    pytest.param(desired(M3), cluster(not_formed=True, idle=M3,
                                      runtimes={n: HELD_IDLE for n in M3}),
                 [], "backoff", id="bootstrap: all held"),
    pytest.param(desired(M3), cluster(["m1", "m2"], unstarted=["m3"],
                                      runtimes={"m3": HELD_IDLE}),
                 [], "backoff", id="a voter that never started, held"),
    pytest.param(desired(["m1", "m2", "m3", "m4"]),
                 cluster(M3, learner="m4", runtimes={"m4": HELD_IDLE}),
                 [], "backoff", id="a learner not started yet, held"),
    pytest.param(desired(["m1", "m2", "m4"]),
                 cluster(["m1", "m2"], idle=["m4"], runtimes={"m4": HELD_IDLE}),
                 [], "backoff", id="a missing member is not added while held"),
    pytest.param(desired(M3), cluster(M3, dead=["m2"], rbac_ready=False,
                                      runtimes={"m2": HELD_DEAD}),
                 [(RBAC, "")], "rbac", id="other work goes on"),
    pytest.param(desired(M3), cluster(M3, runtimes={"m2": HELD_RUNNING}),
                 [], "steady", id="a hold on a running member changes nothing"),
])
def test_decide_starts_no_held_member(d: Desired, o: Observed, ops: list[tuple[str, str]],
                                      phase: str) -> None:
    decision = decide(d, o)
    assert (steps(decision), decision.phase) == (ops, phase), decision.reason
    held = [n for n, r in o.runtimes.items() if r.held_until and not r.running]
    for n in held:
        assert f"{n}: restart in back-off until 2027-01-15T08:00:00Z" in decision.reason


def test_the_backoff_reason_says_how_many_starts_and_how_it_ended() -> None:
    decision = decide(desired(M3), cluster(M3, dead=["m2"], runtimes={"m2": HELD_DEAD}))
    assert decision.reason.startswith("m2: restart in back-off until 2027-01-15T08:00:00Z "
                                      "(4 starts without a healthy minute, last: exit "
                                      "status 2)"), decision.reason


# ---- the start book: the edge that keeps the streaks ---------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> float:
        return self.now


def test_the_book_notices_exits_and_carries_streaks_over_a_daemon_restart(
        tmp_path: Path, logs: list[MutableMapping[str, Any]]) -> None:
    clock = Clock()
    book = StartBook(tmp_path, structlog.get_logger(), clock=clock)
    book.started("m2")
    book.spawned("m2", 42)
    assert not book.seen("m2", True, 42, healthy=False)  # still running
    clock.now += 0.2
    assert book.seen("m2", False, None, healthy=False)  # gone: an exit to report
    record = book.exited("m2", MemberExit("exit status 2", code=2, reason="panic: x",
                                          log_tail=("a", "panic: x")))
    assert record["ran_for"] == 0.2 and record["became_healthy"] is False
    assert record["starts"] == 1 and record["next_start"] == iso(T + 1)
    assert [e["event"] for e in logs] == ["member_exited"]
    assert not book.seen("m2", False, None, healthy=False)  # reported once
    stamped = book.stamp("m2", Runtime())
    assert (stamped.held_until, stamped.starts, stamped.last_exit) == (T + 1, 1, "exit status 2")

    # A restarted daemon (or `ckeetcd status`) reads the same streak and exit back.
    again = StartBook(tmp_path, readonly=True, clock=clock)
    assert again.held_until("m2") == T + 1 and again.last_exit("m2") == record
    before = (tmp_path / "starts.json").read_bytes()
    again.started("m2")
    assert (tmp_path / "starts.json").read_bytes() == before, "a read-only book wrote"


def test_the_book_adopts_running_members_and_ignores_deliberate_stops(
        tmp_path: Path, logs: list[MutableMapping[str, Any]]) -> None:
    clock = Clock()
    book = StartBook(tmp_path, structlog.get_logger(), clock=clock)
    assert not book.seen("m1", True, 7, healthy=True)  # adopted after a daemon restart
    assert book.seen("m1", True, 8, healthy=False)  # another process in its place
    book.exited("m1", MemberExit("unknown (not started by this daemon process)"))
    assert not book.seen("m1", True, 8, healthy=True)
    book.stopped("m1")  # stop-member: not an exit
    assert not book.seen("m1", False, None, healthy=False)
    assert len(named(logs, "member_exited")) == 1
    assert book.held_until("m1") is None  # never started here: nothing held


def test_a_healthy_minute_resets_the_streak_in_the_file(tmp_path: Path) -> None:
    clock = Clock()
    book = StartBook(tmp_path, clock=clock)
    for _ in range(3):
        book.started("m3")
        clock.now += 10
    book.spawned("m3", 9)
    book.seen("m3", True, 9, healthy=True)
    clock.now += 60
    book.seen("m3", True, 9, healthy=True)
    assert json.loads((tmp_path / "starts.json").read_text())["members"]["m3"]["count"] == 0


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"members": 3}',
                                     b'{"members": {"m1": {"count": "x"}}}'])
def test_a_broken_book_file_is_an_empty_book(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "starts.json").write_bytes(content)
    book = StartBook(tmp_path, readonly=True)
    assert book.held_until("m1") is None and book.last_exit("m1") is None


# ---- what the end of etcd.log says ---------------------------------------------------
ZAP_INFO = '{"level":"info","ts":"t","caller":"c","msg":"starting"}'
ZAP_WARN = ('{"level":"warn","ts":"t","msg":"failed to verify flags","error":'
            '"--election-timeout[99999999999ms] is too long"}')
ZAP_PANIC = ('{"level":"panic","ts":"t","msg":"failed to open database","error":'
             '"invalid database","stacktrace":"go.etcd.io/..."}')
EARLIER = "--- 2026-01-01T00:00:00+00:00 start (existing)\n" + ZAP_PANIC + "\n"
FLAG_RUN = "flag provided but not defined: -no-such-flag\nUsage:\n\n  etcd [flags]\n  ...\n"
PANIC_RUN = (f"{ZAP_INFO}\n{ZAP_PANIC}\npanic: failed to open database\n\n"
             "goroutine 1 [running]:\ngo.uber.org/zap.(*Logger).Panic(...)\n\t/x.go:1\n")


@pytest.mark.parametrize(("text", "reason", "tail"), [
    ("", "", ()),
    (f"{EARLIER}--- 2026-01-02T00:00:00+00:00 start (existing)\n{ZAP_INFO}\n",
     "info: starting", (ZAP_INFO,)),  # only the latest run counts
    (f"--- start\n{FLAG_RUN}", "flag provided but not defined: -no-such-flag",
     ("flag provided but not defined: -no-such-flag",)),  # the usage text is cut
    (f"--- start\n{ZAP_INFO}\n{ZAP_WARN}\n",
     "warn: failed to verify flags: --election-timeout[99999999999ms] is too long",
     (ZAP_INFO, ZAP_WARN)),
    (f"--- start\n{PANIC_RUN}", "panic: failed to open database: invalid database",
     (ZAP_INFO, ZAP_PANIC[:300] + "...", "panic: failed to open database")
     if len(ZAP_PANIC) > 300 else (ZAP_INFO, ZAP_PANIC, "panic: failed to open database")),
    ("plain words\n", "plain words", ("plain words",)),  # no start mark: all of it
])
def test_the_exit_reason_and_tail_come_from_the_latest_run(text: str, reason: str,
                                                           tail: tuple[str, ...]) -> None:
    assert exit_reason(text) == reason
    assert log_tail(text) == tail


def test_the_tail_is_bounded() -> None:
    text = "".join(f"line {i} " + "x" * 1000 + "\n" for i in range(100))
    tail = log_tail(text)
    assert len(tail) == 20 and tail[0].startswith("line 80 ")
    assert all(len(line) == 303 for line in tail)
    assert len(exit_reason(text)) == 303


@pytest.mark.parametrize(("code", "status", "signum"), [
    (0, "exit status 0", None), (2, "exit status 2", None),
    (-9, "killed by signal 9 (SIGKILL)", 9), (-15, "killed by signal 15 (SIGTERM)", 15),
    (None, "unknown (why not)", None),
])
def test_exit_status_wording(code: int | None, status: str, signum: int | None) -> None:
    e = exit_of(code, "", "why not")
    assert (e.status, e.signal) == (status, signum)
    assert e.code == (code if code is not None and code >= 0 else None)


def test_a_killed_member_gets_no_reason_from_earlier_warnings() -> None:
    assert exit_of(-9, f"--- start\n{ZAP_WARN}\n", "").reason == ""
    assert "failed to open database" in exit_of(-6, f"--- start\n{PANIC_RUN}", "").reason


# ---- a full disk: the hold ends when the space is back ------------------------------
MIB = 1024 * 1024
FATAL_NOSPACE = ("exit status 1 fatal: failed to commit tx: write .../member/snap/db: "
                 "no space left on device")


@pytest.mark.parametrize(("text", "at_exit", "now", "back"), [
    (FATAL_NOSPACE, 0, 200 * MIB, True),                     # full at the exit, room now
    (FATAL_NOSPACE, None, 64 * MIB, True),                   # not measured at the exit
    ("not started: OSError: [Errno 28] No space left on device", 4096, 100 * MIB, True),
    (FATAL_NOSPACE, 0, 64 * MIB - 1, False),                 # still short of room
    (FATAL_NOSPACE, 0, None, False),                         # the runtime cannot tell
    (FATAL_NOSPACE, 500 * MIB, 500 * MIB, False),            # room at the exit: inodes, a
    (FATAL_NOSPACE, 64 * MIB, 500 * MIB, False),             # quota: the ordinary back-off
    ("exit status 1 warn: Running http and grpc server on single port.", 0, 100 * MIB,
     True),                                                  # its fatal line did not fit
    ("exit status 2 panic: x", None, 500 * MIB, False),      # not a disk problem
    ("killed by signal 9 (SIGKILL) ", None, 500 * MIB, False),
])
def test_a_disk_full_hold_ends_once_there_is_room(text: str, at_exit: int | None,
                                                  now: int | None, back: bool) -> None:
    assert restarts.space_is_back(text, at_exit, now) is back


def test_the_book_lifts_a_disk_full_hold_once_and_logs_it(
        tmp_path: Path, logs: list[Any]) -> None:
    clock, log = Clock(), structlog.get_logger()
    book = StartBook(tmp_path, log, clock=clock)
    for n in range(1, 6):  # a crash loop on a full disk: the hold grows to 16 s
        clock.now += restarts.delay(n - 1)
        book.started("m2")
        book.spawned("m2", 42)
        assert book.seen("m2", False, None, healthy=False, disk_free=0)
        book.exited("m2", MemberExit("exit status 1", code=1, reason=FATAL_NOSPACE))
        assert book.stamp("m2", Runtime(disk_free=0)).held_until == clock.now + restarts.delay(n)
    clock.now += 1
    assert book.stamp("m2", Runtime(disk_free=10 * MIB)).held_until > clock.now  # not yet
    lifted = book.stamp("m2", Runtime(disk_free=100 * MIB))
    assert lifted.held_until == 0.0 and lifted.starts == 5  # the count stays
    assert [e["member"] for e in named(logs, "restart_hold_lifted")] == ["m2"]
    assert book.stamp("m2", Runtime(disk_free=100 * MIB)).held_until == 0.0
    assert len(named(logs, "restart_hold_lifted")) == 1  # said once
    assert StartBook(tmp_path, clock=clock).held_until("m2") is None  # kept in the file
    # It starts, and fails again with room on the disk: the ordinary back-off (32 s).
    book.started("m2")
    book.seen("m2", False, None, healthy=False, disk_free=100 * MIB)
    book.exited("m2", MemberExit("exit status 1", code=1, reason=FATAL_NOSPACE))
    assert book.stamp("m2", Runtime(disk_free=100 * MIB)).held_until == clock.now + 32


@pytest.mark.parametrize(("help_text", "flags"), [
    ("      --bump-revision uint   How much...\n      --mark-compacted   Mark ...",
     ["--bump-revision=1000000000", "--mark-compacted"]),
    ("      --data-dir string   Path to the output data directory", []),  # an older etcdutl (3.5.1)
    ("", []),  # etcdutl could not be run: its restore then fails by itself
])
def test_a_restore_bumps_revisions_when_etcdutl_can(help_text: str, flags: list[str]) -> None:
    assert restore_bump_flags(help_text) == flags


@pytest.mark.parametrize(("snapshot", "seen", "bump"), [
    (500, 0, 1_000_000_000),                  # nothing answered
    (500, 480, 1_000_000_000),                # a member behind the snapshot
    (500, 900, 1_000_000_400),                # quorum lost after 400 more writes
    (500, 1_000_000_600, 2_000_000_100),      # an interrupted restore's members served
])
def test_a_restore_bumps_above_everything_handed_out(snapshot: int, seen: int,
                                                     bump: int) -> None:
    assert restore_bump(snapshot, seen) == bump
    assert snapshot + bump > seen


def test_a_rerun_restore_starts_above_every_earlier_interrupted_run() -> None:
    note = ("ckeetcd restore, pid 7 on cp1, since 2026-01-01T00:00:00+00:00, from b.db; "
            "restored revisions start at 1000000500")
    start = restored_start(["", note, "ckeetcd restore, pid 3 (an older ckeetcd's marker)"])
    assert start == 1_000_000_500
    assert 500 + restore_bump(500, 0, start) == 2_000_000_500  # no member answers
    nested = 500 + restore_bump(500, 0, 2_000_000_500)         # and a third run
    assert nested == 3_000_000_500
    assert restored_start([]) == 0


def test_a_removed_member_is_forgotten(tmp_path: Path) -> None:
    clock = Clock()
    book = StartBook(tmp_path, clock=clock)
    for _ in range(4):
        book.started("m2")
    assert book.held_until("m2") == T + 8
    book.forget("m2")
    assert book.held_until("m2") is None and book.last_exit("m2") is None
    assert StartBook(tmp_path, clock=clock).held_until("m2") is None  # in the file too

"""The history checker: pure functions over what the clients saw and what is stored.

Writes (each key is written at most once, with a value no other put uses):
  - every acknowledged put is in the final store with its value, and with the
    revision its response carried (lost otherwise);
  - every definite failure is absent; indeterminate puts may be either (they
    are counted apart);
  - no key under the prefix that no client ever tried to write.

Reads and order ("stale reads"). etcd gives every operation a revision, so
instead of searching for a linearization (porcupine) it is checked directly:
  - per client, revisions never decrease (puts: strictly increase);
  - real time: an operation that starts after another ended never carries a
    smaller revision (a put: never the same one either);
  - a read at revision R counted exactly the stored keys created at or before R
    (a mismatch: the read, or the final store, is wrong; reported apart).
Present indeterminate puts take their revision from the store and must also
respect real time on their start (they cannot be applied before they began).

Across a restore (`Rollback`: the snapshot's revision S, the moment the
restore was done). A restore legitimately drops what was written after its
snapshot, and nothing else:
  - a put acknowledged before the restore was done with a revision above S is
    *rolled back*: it must be absent (counted apart, not lost); every other
    acknowledged put must be there as usual (so everything up to S survives);
  - revisions never go back, restore or not: the restored cluster starts above
    every revision seen before it (etcdutl --bump-revision), so the per-client
    and real-time rules hold unchanged across it;
  - a read made before the restore at a revision above S counted keys that are
    gone now: it must have counted at least the stored keys created by then
    plus the acknowledged rolled-back ones created by then, and at most that
    plus the absent indeterminate puts begun since the previous restore and
    before the read ended. Reads at or below S, and reads after the restore,
    are checked exactly.

Daemon log: every error-level event and every traceback must be explained:
inside a fault window (start - EARLY to steady + LATE) of a kind listed for
it in EXPLAINED (or, with two voters left, in TWO_VOTER_WINDOW). Tracebacks
are never explained.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.soak.history import FAILED, INDETERMINATE, OK, OpRecord


@dataclass(frozen=True)
class Stored:
    """A key as the final read found it."""

    value: str
    mod_revision: int
    create_revision: int
    version: int


@dataclass
class WriteVerdict:
    acked: int = 0
    failed: int = 0
    indeterminate: int = 0
    indeterminate_present: int = 0
    lost: list[str] = field(default_factory=list)             # acked, absent
    wrong_value: list[str] = field(default_factory=list)      # acked, other value
    wrong_revision: list[str] = field(default_factory=list)   # acked, other revision
    failed_present: list[str] = field(default_factory=list)   # definite failure, stored
    rolled_back: list[str] = field(default_factory=list)      # acked, dropped by a restore
    rolled_back_present: list[str] = field(default_factory=list)  # ... yet stored
    unknown_present: list[str] = field(default_factory=list)  # stored, never attempted
    rewritten: list[str] = field(default_factory=list)        # version > 1

    @property
    def violations(self) -> list[str]:
        out = []
        for name in ("lost", "wrong_value", "wrong_revision", "failed_present",
                     "rolled_back_present", "unknown_present", "rewritten"):
            keys = getattr(self, name)
            if keys:
                out.append(f"{name}: {len(keys)} (e.g. {keys[:3]})")
        return out


@dataclass(frozen=True)
class Rollback:
    """A restore: the store went back to `revision` (its snapshot's); done at `end`
    (time.monotonic(), like the history)."""

    revision: int
    end: float


def rolled_back_by(r: OpRecord, rollbacks: Iterable[Rollback]) -> Rollback | None:
    """The restore that dropped acknowledged put `r`, if any: the first one done after
    it was acknowledged, when its revision is above that restore's snapshot."""
    for rb in sorted(rollbacks, key=lambda rb: rb.end):
        if r.end <= rb.end:
            return rb if r.revision > rb.revision else None
    return None


def check_writes(history: Iterable[OpRecord], stored: dict[str, Stored],
                 rollbacks: tuple[Rollback, ...] = ()) -> WriteVerdict:
    v = WriteVerdict()
    attempted = set()
    for r in history:
        if r.kind != "put":
            continue
        attempted.add(r.key)
        s = stored.get(r.key)
        if r.outcome == OK:
            v.acked += 1
            if rolled_back_by(r, rollbacks) is not None:
                v.rolled_back.append(r.key)
                if s is not None:
                    v.rolled_back_present.append(r.key)
            elif s is None:
                v.lost.append(r.key)
            elif s.value != r.value:
                v.wrong_value.append(r.key)
            elif s.mod_revision != r.revision:
                v.wrong_revision.append(r.key)
        elif r.outcome == FAILED:
            v.failed += 1
            if s is not None:
                v.failed_present.append(r.key)
        else:
            v.indeterminate += 1
            if s is not None:
                v.indeterminate_present += 1
                if s.value != r.value:
                    v.wrong_value.append(r.key)
    v.unknown_present = sorted(k for k in stored if k not in attempted)
    v.rewritten = sorted(k for k, s in stored.items() if s.version != 1)
    return v


@dataclass
class OrderVerdict:
    reads: int = 0
    client_regressions: list[str] = field(default_factory=list)
    realtime_violations: list[str] = field(default_factory=list)
    count_mismatches: list[str] = field(default_factory=list)

    @property
    def stale_reads(self) -> int:
        """Operations that saw the store go back in time (per client or in real time)."""
        return len(self.client_regressions) + len(self.realtime_violations)

    @property
    def violations(self) -> list[str]:
        out = []
        for name in ("client_regressions", "realtime_violations", "count_mismatches"):
            items = getattr(self, name)
            if items:
                out.append(f"{name}: {len(items)} (e.g. {items[:3]})")
        return out


def _timed_revisions(history: list[OpRecord], stored: dict[str, Stored],
                     ) -> list[tuple[OpRecord, int]]:
    """Operations whose revision is known: ok ones, and present indeterminate puts."""
    out = []
    for r in history:
        if r.outcome == OK:
            out.append((r, r.revision))
        elif r.kind == "put" and r.outcome == INDETERMINATE and r.key in stored:
            out.append((r, stored[r.key].mod_revision))
    return out


def check_order(history: list[OpRecord], stored: dict[str, Stored],
                rollbacks: tuple[Rollback, ...] = ()) -> OrderVerdict:
    v = OrderVerdict()
    # 1. per client, in the order it issued its operations
    last: dict[str, tuple[int, OpRecord]] = {}
    for r in sorted((r for r in history if r.outcome == OK), key=lambda r: r.start):
        prev = last.get(r.client)
        if prev is not None and (r.revision < prev[0]
                                 or (r.kind == "put" and r.revision == prev[0])):
            v.client_regressions.append(
                f"{r.client}: revision {r.revision} at {r.start:.3f} after {prev[0]} "
                f"({prev[1].kind} ending {prev[1].end:.3f})")
        last[r.client] = (r.revision, r)
    # 2. real time: max revision of everything that ended before each start (an
    #    indeterminate put may have been applied after its client gave up: it
    #    only counts from its start)
    timed = _timed_revisions(history, stored)
    by_end = sorted(((r, rev) for r, rev in timed if r.outcome == OK), key=lambda t: t[0].end)
    ends = [t[0].end for t in by_end]
    prefix_max: list[tuple[int, OpRecord | None]] = []
    best: tuple[int, OpRecord | None] = (0, None)
    for r, rev in by_end:
        if rev > best[0]:
            best = (rev, r)
        prefix_max.append(best)
    for r, rev in timed:
        i = bisect.bisect_left(ends, r.start) - 1
        if i < 0:
            continue
        before, who = prefix_max[i]
        if rev < before or (r.kind == "put" and rev == before):
            assert who is not None
            v.realtime_violations.append(
                f"{r.client} {r.kind} started {r.start:.3f} with revision {rev}, after "
                f"{who.client} {who.kind} ended {who.end:.3f} with revision {before}")
    # 3. a read counts exactly the keys created at or before its revision (within
    #    bounds when a restore dropped some of them since)
    created = sorted(s.create_revision for s in stored.values())
    dropped = _dropped_puts(history, stored, rollbacks)
    for r in history:
        if r.kind == "read" and r.outcome == OK:
            v.reads += 1
            expected = bisect.bisect_right(created, r.revision)
            low, high = expected, expected
            rb = rolled_back_by(r, rollbacks)
            if rb is not None:
                acked, maybe = dropped[rb]
                low += bisect.bisect_right(acked, r.revision)
                high = low + bisect.bisect_left(maybe, r.end)
            if not low <= r.count <= high:
                held = f"{low}" if low == high else f"{low} to {high}"
                v.count_mismatches.append(
                    f"{r.client} read at revision {r.revision} ({r.start:.3f}) counted "
                    f"{r.count}, the store held {held} keys created by then")
    return v


def _dropped_puts(history: list[OpRecord], stored: dict[str, Stored],
                  rollbacks: tuple[Rollback, ...]) -> dict[Rollback, tuple[list[int], list[float]]]:
    """Per restore: the revisions of the acknowledged puts it dropped, and the start times
    of the absent indeterminate puts begun since the previous restore (maybe applied,
    then dropped), both sorted."""
    out: dict[Rollback, tuple[list[int], list[float]]] = {rb: ([], []) for rb in rollbacks}
    ordered = sorted(rollbacks, key=lambda rb: rb.end)
    for r in history:
        if r.kind != "put":
            continue
        if r.outcome == OK:
            rb = rolled_back_by(r, rollbacks)
            if rb is not None:
                out[rb][0].append(r.revision)
        elif r.outcome == INDETERMINATE and r.key not in stored:
            prev = 0.0
            for rb in ordered:
                if prev < r.start <= rb.end:
                    out[rb][1].append(r.start)
                    break
                prev = rb.end
    for acked, maybe in out.values():
        acked.sort()
        maybe.sort()
    return out


# ---- the daemon log --------------------------------------------------------------
EARLY, LATE = 0.5, 5.0  # seconds around a fault window that still explain an event

# fault kind -> the error events it explains (nothing else is explained)
EXPLAINED: dict[str, tuple[str, ...]] = {
    "kill-quorum": ("quorum_lost",),  # two of three members down: that is quorum loss
    # the namespace lab, in the log of the daemon whose own node was cut off: its side
    # has one member of three (tests/soak/labsoak.py)
    "partition-own-node": ("quorum_lost",),
}
# A swap stops the leaving member, removes it, then adds the new one (DESIGN.md rule
# 3): for a while one voter of three is down by design, then there are two voters, and
# a member fault then (a swap under a fault) is a real loss of quorum. Explained with
# the event's own `voters` == 2, or with three voters when the two that are down are
# the leaving member and the fault's own targets; one fault alone is never explained.
TWO_VOTER_WINDOW: dict[str, tuple[str, ...]] = {
    "swap-under-fault": ("quorum_lost",),
}


@dataclass(frozen=True)
class Window:
    causes: tuple[str, ...]  # the fault's kind, and the kind of a fault it ran under
    start: float             # wall clock (time.time()), like the log's timestamps
    steady: float
    leaving: str = ""                # a swap's leaving member
    under_targets: tuple[str, ...] = ()  # the members the fault it ran under hit


def _swap_and_fault_down(e: dict[str, Any], w: Window) -> bool:
    """Three voters, one running: the swap's stopped leaving member and the fault's own
    targets are the two down (the stopped ones that keep their data are the targets;
    the leaving member's data is archived by the swap's stop)."""
    stopped = set(e.get("stopped_with_data") or ())
    hit = set(w.under_targets)
    return (bool(w.leaving) and e.get("voters") == 3 and e.get("running_voters") == 1
            and bool(stopped & hit) and stopped <= hit | {w.leaving})


def parse_log_line(line: str) -> dict[str, Any] | None:
    """A JSON event, a non-JSON line as {"event": "raw", "line": ...}, or None if blank."""
    if not line.strip():
        return None
    try:
        e = json.loads(line)
    except ValueError:
        return {"event": "raw", "level": "raw", "line": line}
    return e if isinstance(e, dict) else {"event": "raw", "level": "raw", "line": line}


def is_traceback(e: dict[str, Any]) -> bool:
    return "exception" in e or (e.get("event") == "raw" and "Traceback" in e.get("line", ""))


def needs_explaining(e: dict[str, Any]) -> bool:
    return is_traceback(e) or e.get("level") in ("error", "critical")


def _wall(e: dict[str, Any]) -> float | None:
    ts = e.get("timestamp")
    if not isinstance(ts, str):
        return None
    try:
        return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def event_time(e: dict[str, Any]) -> float:
    """The event's wall-clock time (time.time()), NaN when it has none."""
    t = _wall(e)
    return float("nan") if t is None else t


def explain(e: dict[str, Any], windows: list[Window]) -> str | None:
    """The fault kind that explains error event `e`, or None."""
    if is_traceback(e):
        return None
    t = _wall(e)
    if t is None:
        return None
    for w in windows:
        if not w.start - EARLY <= t <= w.steady + LATE:
            continue
        for cause in w.causes:
            if e.get("event") in EXPLAINED.get(cause, ()):
                return cause
        if e.get("event") in TWO_VOTER_WINDOW.get(w.causes[0], ()):
            if e.get("voters") == 2:
                return f"{w.causes[0]} (two voters)"
            if _swap_and_fault_down(e, w):
                return f"{w.causes[0]} (leaving member stopped, fault target down)"
    return None


@dataclass
class LogVerdict:
    errors: list[dict[str, Any]] = field(default_factory=list)       # every one, with why
    unexplained: list[dict[str, Any]] = field(default_factory=list)
    # warnings that were error-level alerts before the alert needed evidence (finding 7):
    # counted, so a run shows how often one missed probe would have raised quorum_lost
    doubts: list[dict[str, Any]] = field(default_factory=list)

    def by_event(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for e in self.errors:
            out[f"{e.get('event')}:{e.get('explained_by') or 'UNEXPLAINED'}"] += 1
        return dict(out)


def check_log(lines: Iterable[str], windows: list[Window]) -> LogVerdict:
    v = LogVerdict()
    for line in lines:
        e = parse_log_line(line)
        if e is not None and e.get("event") == "quorum_in_doubt":
            v.doubts.append(e)
        if e is None or not needs_explaining(e):
            continue
        kind = explain(e, windows)
        v.errors.append({**e, "explained_by": kind})
        if kind is None:
            v.unexplained.append(e)
    return v


def check_rbac(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Differences between two `etcdctl user/role get` snapshots."""
    out = []
    for k in sorted(set(before) | set(after)):
        if before.get(k) != after.get(k):
            out.append(f"{k}: {before.get(k)!r} -> {after.get(k)!r}")
    return out

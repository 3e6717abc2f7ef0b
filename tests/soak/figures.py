"""The soak's figures, from the history and the fault log (pure).

Write stall of a fault: the longest gap between two consecutive acknowledged
puts (across all writers, by acknowledgement time) among the gaps that
overlap the fault's window, from just before the fault began until the
cluster was steady again. Time to steady: from the fault's start until the
engine's probe saw exactly the desired members, voting, healthy, agreeing on
a leader, and the servers file listing all of them.
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tests.soak.history import FAILED, INDETERMINATE, OK, OpRecord


@dataclass(frozen=True)
class FaultRecord:
    kind: str
    details: dict[str, Any]
    start: float         # time.monotonic() just before the fault began
    ended: float         # its end phase done (SIGCONT sent, daemon restarted, ...)
    steady: float        # the cluster steady again
    wall_start: float    # time.time() at `start`, to match log timestamps
    wall_steady: float
    resumed: float = 0.0  # first acknowledged put after `steady`

    @property
    def to_steady(self) -> float:
        return self.steady - self.start


def ack_times(history: Iterable[OpRecord]) -> list[float]:
    return sorted(r.end for r in history if r.kind == "put" and r.outcome == OK)


def longest_gap(acks: list[float], start: float, end: float) -> float:
    """The longest gap between consecutive acks that overlaps [start, end]."""
    i = max(bisect.bisect_right(acks, start) - 1, 0)
    j = min(bisect.bisect_left(acks, end), len(acks) - 1)
    return max((acks[k + 1] - acks[k] for k in range(i, j)), default=0.0)


def _stats(xs: list[float]) -> dict[str, float | int]:
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "median": round(statistics.median(xs), 3), "max": round(max(xs), 3)}


def counts(history: Iterable[OpRecord]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {k: {OK: 0, FAILED: 0, INDETERMINATE: 0}
                                      for k in ("put", "read")}
    for r in history:
        out[r.kind][r.outcome] += 1
    return out


def latency(history: Iterable[OpRecord], kind: str, start: float = 0.0,
            end: float = float("inf")) -> dict[str, float | int]:
    xs = sorted(r.end - r.start for r in history
                if r.kind == kind and r.outcome == OK and start <= r.start <= end)
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "p50_ms": round(1000 * xs[len(xs) // 2], 2),
            "p99_ms": round(1000 * xs[min(len(xs) - 1, int(len(xs) * 0.99))], 2),
            "max_ms": round(1000 * xs[-1], 2)}


def per_kind(faults: list[FaultRecord], acks: list[float]) -> dict[str, dict[str, Any]]:
    """Per fault kind: how many, the write stall and the time to steady (median, max)."""
    stalls: dict[str, list[float]] = defaultdict(list)
    steady: dict[str, list[float]] = defaultdict(list)
    for f in faults:
        stalls[f.kind].append(longest_gap(acks, f.start, f.steady))
        steady[f.kind].append(f.to_steady)
    return {k: {"faults": len(steady[k]), "write_stall_s": _stats(stalls[k]),
                "to_steady_s": _stats(steady[k])} for k in sorted(steady)}


def fault_rows(faults: list[FaultRecord], acks: list[float]) -> list[dict[str, Any]]:
    return [{"kind": f.kind, **f.details, "start": round(f.start, 3),
             "wall_start": round(f.wall_start, 3), "wall_steady": round(f.wall_steady, 3),
             "write_stall_s": round(longest_gap(acks, f.start, f.steady), 3),
             "to_steady_s": round(f.to_steady, 3)} for f in faults]


def table(kinds: dict[str, dict[str, Any]]) -> str:
    """The per-kind figures as a plain text table (what the test prints)."""
    lines = [f"{'fault':24s} {'n':>3s} {'stall med':>9s} {'stall max':>9s} "
             f"{'steady med':>10s} {'steady max':>10s}"]
    for k, v in kinds.items():
        s, t = v["write_stall_s"], v["to_steady_s"]
        lines.append(f"{k:24s} {v['faults']:3d} {s.get('median', 0):9.3f} {s.get('max', 0):9.3f}"
                     f" {t.get('median', 0):10.3f} {t.get('max', 0):10.3f}")
    return "\n".join(lines)


FOLLOWER_STALL_TARGET = 0.1  # s: a follower killed or hung
LEADER_STALL_FACTOR = 1.5    # x etcd's election timeout: the leader killed


def targets(kinds: dict[str, dict[str, Any]], election_timeout: float, lost: int,
            stale: int, failures: int, noise: float) -> dict[str, dict[str, Any]]:
    """Issue 12's targets, each with what was measured and whether it was met.

    `noise` is the longest write gap with no fault at all (the quiet baseline
    of the same run): the daemon killed mid-swap meets its target when its
    longest stall is within that of a plain swap plus this noise.
    """
    def stall(kind: str) -> float | None:
        v = kinds.get(kind, {}).get("write_stall_s", {})
        return v.get("max") if v.get("n") else None

    out: dict[str, dict[str, Any]] = {
        "no_acknowledged_write_lost": {"measured": lost, "met": lost == 0},
        "no_stale_read": {"measured": stale, "met": stale == 0},
        "every_fault_recovered": {"measured": f"{failures} failures", "met": failures == 0},
    }
    for kind in ("kill-follower", "hang-follower"):
        s = stall(kind)
        out[f"{kind}_stall_max"] = {"target_s": FOLLOWER_STALL_TARGET, "measured_s": s,
                                    "met": s is not None and s <= FOLLOWER_STALL_TARGET}
    limit = round(LEADER_STALL_FACTOR * election_timeout, 3)
    s = stall("kill-leader")
    out["kill-leader_stall_max"] = {"target_s": limit, "measured_s": s,
                                    "met": s is not None and s <= limit}
    mid, own = stall("daemon-killed-mid-swap"), stall("swap")
    out["daemon-killed-mid-swap_stall_max"] = {
        "target": "<= a plain swap's (same run) + the quiet baseline's longest gap",
        "measured_s": mid, "swap_s": own, "noise_s": noise,
        "met": mid is not None and own is not None and mid <= own + noise}
    return out

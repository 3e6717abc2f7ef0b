"""Where a soak fault's write stall goes: etcd (no leader, a busy machine) or the clients.

Reads a long run's result (bench/results/soak.json: the fault log, monotonic
start times) and its kept history (`logs and history kept in DIR`:
DIR/soak/history.jsonl, the same clock). For every fault of the kinds asked,
each writer's own longest gap between acknowledged puts over the fault's
window is split by whether the writer had to move to another endpoint:

- stayed: the acks around its longest gap came from the same endpoint (a
  member that was not hit). That wait is etcd's: no leader to commit (an
  election), or every member slow on a busy machine.
- moved: the ack that ended its longest gap came from another endpoint: it
  failed over (connection reset, or its 0.5 s deadline) and went on there.

With no failover needed by the stayers, a stall they share is not the
clients'.

Run: .venv/bin/python bench/soak_stalls.py bench/results/soak.json DIR
     [--kinds kill-leader,kill-follower,hang-leader,hang-follower]
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.soak.figures import longest_gap  # noqa: E402
from tests.soak.history import OK, OpRecord, read_history  # noqa: E402


def split(fault: dict[str, Any], puts: list[OpRecord]) -> dict[str, Any]:
    """One fault: each writer's own longest gap between acks over the fault's window,
    the writers split by whether they had to move to another endpoint across it."""
    t0, t1 = fault["start"], fault["start"] + fault["to_steady_s"]
    by_writer: dict[str, list[OpRecord]] = defaultdict(list)
    for r in puts:  # sorted by end
        by_writer[r.client].append(r)
    gaps: dict[str, list[float]] = defaultdict(list)
    for rs in by_writer.values():
        ends = [r.end for r in rs]
        i = max(bisect.bisect_right(ends, t0) - 1, 0)
        j = min(bisect.bisect_left(ends, t1), len(rs) - 1)
        if j <= i:
            continue
        k = max(range(i, j), key=lambda k: ends[k + 1] - ends[k])
        moved = rs[k].endpoint != rs[k + 1].endpoint
        gaps["moved" if moved else "stayed"].append(ends[k + 1] - ends[k])
    acks = [r.end for r in puts]
    return {"kind": fault["kind"], "stall_s": fault["write_stall_s"],
            "stayed_gap_s": round(max(gaps["stayed"]), 3) if gaps["stayed"] else None,
            "moved_gap_s": round(max(gaps["moved"]), 3) if gaps["moved"] else None,
            "gap_check_s": round(longest_gap(acks, t0, t1), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("result", type=Path)
    ap.add_argument("logs", type=Path)
    ap.add_argument("--kinds", default="kill-leader,kill-follower,hang-leader,hang-follower")
    args = ap.parse_args()
    result = json.loads(args.result.read_text())
    kinds = set(args.kinds.split(","))
    puts = sorted((r for r in read_history(args.logs / "soak" / "history.jsonl")
                   if r.kind == "put" and r.outcome == OK), key=lambda r: r.end)
    rows = [split(f, puts) for f in result["fault_log"] if f["kind"] in kinds]
    et = result.get("election_timeout_s", 1.0)
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_kind[row["kind"]].append(row)
    for kind, rs in sorted(by_kind.items()):
        stayed = [r["stayed_gap_s"] for r in rs if r["stayed_gap_s"] is not None]
        moved = [r["moved_gap_s"] for r in rs if r["moved_gap_s"] is not None]
        print(f"{kind} ({len(rs)} faults; election timeout {et:g} s)")
        for name, xs in (("stall (soak figure)", [r["stall_s"] for r in rs]),
                         ("longest gap, writers that stayed", stayed),
                         ("longest gap, writers that moved", moved)):
            if xs:
                print(f"  {name:32s} median {statistics.median(xs):6.3f} s  max {max(xs):6.3f} s"
                      f"  (max {max(xs) / et:4.2f} x election timeout)")
    print(json.dumps(rows, indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

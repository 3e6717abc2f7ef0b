"""Where a soak fault's write stall goes: etcd (no leader, a busy machine) or the clients.

Reads a long run's result (bench/results/soak.json: the fault log, monotonic
start times) and its kept history (`logs and history kept in DIR`:
DIR/soak/history.jsonl, the same clock). For every fault of the kinds asked,
each writer's first acknowledged put after the fault began is split by
whether the writer had to move to another endpoint:

- stayed: its endpoint kept answering (a member that was not hit). Its wait
  is etcd's: no leader to commit (an election), or every member slow.
- moved: its endpoint was the member hit; it failed over (connection reset,
  or its 0.5 s deadline) and went on on the next one.

The longest gap between acknowledged puts (the soak's figure) ends with the
first ack of some writer: the table says which kind ended it. With no
failover needed by the stayers, a stall they share is not the clients'.

Run: .venv/bin/python bench/soak_stalls.py bench/results/soak.json DIR
     [--kinds kill-leader,kill-follower,hang-leader,hang-follower]
"""

from __future__ import annotations

import argparse
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
    """One fault: each writer's wait for its first ack after the start, stayed or moved."""
    t0 = fault["start"]
    before: dict[str, OpRecord] = {}
    after: dict[str, OpRecord] = {}
    for r in puts:  # sorted by end
        if r.end <= t0:
            before[r.client] = r
        elif r.client not in after:
            after[r.client] = r
    waits: dict[str, list[float]] = defaultdict(list)
    for client, first in after.items():
        last = before.get(client)
        how = "moved" if last is not None and last.endpoint != first.endpoint else "stayed"
        waits[how].append(first.end - t0)
    acks = [r.end for r in puts]
    stall = fault["write_stall_s"]
    ender = min(after.values(), key=lambda r: r.end) if after else None
    moved_first = (ender is not None and ender.client in before
                   and before[ender.client].endpoint != ender.endpoint)
    return {"kind": fault["kind"], "stall_s": stall,
            "stayed_first_ack_s": round(min(waits["stayed"]), 3) if waits["stayed"] else None,
            "moved_first_ack_s": round(min(waits["moved"]), 3) if waits["moved"] else None,
            "first_ack_by": None if ender is None else "moved" if moved_first else "stayed",
            "gap_check_s": round(longest_gap(acks, t0, t0 + fault["to_steady_s"]), 3)}


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
        stayed = [r["stayed_first_ack_s"] for r in rs if r["stayed_first_ack_s"] is not None]
        moved = [r["moved_first_ack_s"] for r in rs if r["moved_first_ack_s"] is not None]
        enders: dict[str, int] = defaultdict(int)
        for r in rs:
            enders[str(r["first_ack_by"])] += 1
        print(f"{kind} ({len(rs)} faults; election timeout {et:g} s)")
        for name, xs in (("stall (soak figure)", [r["stall_s"] for r in rs]),
                         ("first ack, writers that stayed", stayed),
                         ("first ack, writers that moved", moved)):
            if xs:
                print(f"  {name:32s} median {statistics.median(xs):6.3f} s  max {max(xs):6.3f} s"
                      f"  (max {max(xs) / et:4.2f} x election timeout)")
        print(f"  the stall's end came first from: {dict(enders)}")
    print(json.dumps(rows, indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

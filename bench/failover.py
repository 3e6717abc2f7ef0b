"""Leader failover: the leader daemon dies -> the new leader's first cycle, vs the lease TTL.

A namespace lab (tests/netns.py: 5 hosts, sshd each) runs a 3-member cluster
(members h1-h3, reached over SSH) and three daemons on h1-h3 with the same
config. Each repetition kills the current leader daemon and reads, from the
daemons' JSON logs, when another one logged `leadership_acquired` and then
its first `cycle` as leader; the killed daemon is started again (it comes
back as a follower) and the cluster settles before the next repetition.

- kill9: SIGKILL; the lease must expire on its own: failover ~ TTL (minus
  the time since the last keepalive) plus up to one follower poll
  (probe_interval).
- sigterm: a clean stop revokes the lease: failover ~ one follower poll.

Both are measured for each TTL given (default 3 and 6 s) in the same run.

Run (root): .venv/bin/python bench/failover.py [--reps 5] [--ttls 3,6]
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import lab_unavailable, summary, wait_for, write_result

from tests.multihost import MultiCluster
from tests.netns import Lab

PROBE_INTERVAL = 0.2


def ts(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def one(c: MultiCluster, sig: int) -> dict[str, Any]:
    leader = wait_for(c.leader, 30, "a leader")
    marks = c.marks()
    killed = time.time()
    c.kill_daemon(leader, sig)
    others = [d for d in c.daemon_hosts if d != leader]

    def acquired() -> tuple[str, dict[str, Any], dict[str, Any]] | None:
        for d in others:
            got = c.events(d, "leadership_acquired", marks[d])
            cycles = [e for e in c.events(d, "cycle", marks[d]) if e.get("role") == "leader"]
            if got and cycles:
                return d, got[0], cycles[0]
        return None

    new, event, cycle = wait_for(acquired, 60, "a new leader's first cycle", interval=0.05)
    c.start_daemon(leader)
    wait_for(lambda: [e for e in c.events(leader, "role_changed", marks[leader])
                      if e["role"] == "follower"], 30, "the old leader back as a follower")
    time.sleep(1.0)
    return {"old": leader, "new": new, "acquired_s": round(ts(event) - killed, 4),
            "first_cycle_s": round(ts(cycle) - killed, 4), "term": event["term"]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--ttls", default="3,6")
    args = ap.parse_args()
    reason = lab_unavailable()
    if reason:
        print(f"cannot run: {reason}")
        return 1
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ckeetcd-failover-") as tmp:
        for ttl in (int(t) for t in args.ttls.split(",")):
            lab = Lab(Path(tmp) / f"lab{ttl}").start()
            try:
                c = MultiCluster(lab, Path(tmp) / f"mc{ttl}", ["h1", "h2", "h3"],
                                 ["h1", "h2", "h3"])
                for d in c.daemon_hosts:  # the TTL under test
                    text = c.config_text(d, c.members).replace("lease_ttl = 3",
                                                               f"lease_ttl = {ttl}")
                    c.config_path(d).write_text(text)
                c.share_ca()
                c.start_daemons()
                c.wait_healthy(["h1", "h2", "h3"])
                time.sleep(2)
                for mode, sig in (("kill9", signal.SIGKILL), ("sigterm", signal.SIGTERM)):
                    reps = [one(c, sig) for _ in range(args.reps)]
                    results[f"ttl{ttl}_{mode}"] = {
                        "lease_ttl_s": ttl,
                        "acquired_s": summary([r["acquired_s"] for r in reps]),
                        "first_cycle_s": summary([r["first_cycle_s"] for r in reps]),
                        "reps": reps,
                    }
                    print(f"ttl={ttl} {mode}: first cycle "
                          f"{results[f'ttl{ttl}_{mode}']['first_cycle_s']}")
            finally:
                lab.cleanup()
    write_result("failover", {"probe_interval_s": PROBE_INTERVAL, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

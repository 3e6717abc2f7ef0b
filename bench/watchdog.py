"""How regularly the daemon pings systemd's watchdog, against the period it aims for.

    .venv/bin/python bench/watchdog.py [--seconds 30] [--watchdog-usec 2000000]

A 3-member cluster bootstrapped by its daemon, which runs with NOTIFY_SOCKET
and WATCHDOG_USEC set as systemd sets them (tests/test_operability.py's
NotifyCapture records every datagram). Once the cluster is steady, the
WATCHDOG=1 pings are recorded for `--seconds`; the result has the gaps between
pings (median, p95, max) and their ratio to the period the daemon aims for
(half of WATCHDOG_USEC) and to WATCHDOG_USEC itself (past 1.0, systemd would
kill the daemon). This figure used to be a `< 2 s` limit in that test.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

from _common import summary, wait_for, write_result

from tests.harness import Cluster
from tests.test_operability import NotifyCapture


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--watchdog-usec", type=int, default=2_000_000)
    args = p.parse_args()
    timeout = args.watchdog_usec / 1e6
    with tempfile.TemporaryDirectory(prefix="ckeetcd-bench-") as tmp:
        c = Cluster(Path(tmp) / "c", ["m1", "m2", "m3"])
        notify = NotifyCapture(Path(tmp) / "notify")
        try:
            c.start_daemon(env=notify.env(args.watchdog_usec))
            c.wait_healthy(["m1", "m2", "m3"])
            wait_for(lambda: [e for e in c.events("cycle") if e["phase"] == "steady"], 30,
                     "a steady cycle", abort=c.daemon_died)
            start = time.monotonic()
            wait_for(lambda: time.monotonic() - start >= args.seconds, args.seconds + 10,
                     "the window", interval=0.5)
            pings = notify.pings(after=start)
        finally:
            notify.close()
            c.cleanup()
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    s = summary(gaps)
    result = {"window_s": args.seconds, "watchdog_usec": args.watchdog_usec, "pings": len(pings),
              "gap_s": s, "aimed_period_s": timeout / 2,
              "ratio_max_gap_vs_aimed_period": round(float(s["max"]) / (timeout / 2), 2),
              "ratio_max_gap_vs_watchdog_timeout": round(float(s["max"]) / timeout, 2)}
    print(result, write_result("watchdog", result))


if __name__ == "__main__":
    main()

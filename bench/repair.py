"""`kill -9` a member: time until it is healthy again, daemon vs. a restart by hand.

One 3-member cluster (TLS + RBAC, bootstrapped by the daemon). A follower is
killed with SIGKILL; the clock stops when the member's own Status RPC (a fresh
channel per try, so no gRPC reconnect backoff, 10 ms apart) says it is
healthy: it has a leader and no errors.

- daemon: the running daemon notices and restarts it on its data.
- baseline: the daemon is stopped; the member is restarted by hand as soon as
  its ports can be bound again, with the exact command line of its pidfile:
  etcd's own restart time, the floor any supervisor pays.

Run: .venv/bin/python bench/repair.py [--reps 10] [--probe-interval S]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    BenchCluster,
    Cadence,
    EtcdClient,
    EtcdError,
    bench_cluster,
    cadence_parser,
    stop_daemon,
    summary,
    write_result,
)

TARGET = 1.0
POLL = 0.01
SETTLE = 2.0


async def wait_healthy_member(cluster: BenchCluster, name: str, t0: float,
                              timeout: float = 30) -> float:
    tls = cluster.root_tls()
    url = cluster.client_url(name)
    while time.monotonic() - t0 < timeout:
        async with EtcdClient(url, tls, timeout=0.2) as c:
            try:
                h = await c.status()
            except EtcdError:
                h = None
        if h is not None and h.healthy:
            return time.monotonic() - t0
        await asyncio.sleep(POLL)
    raise TimeoutError(f"{name} not healthy {timeout}s after the kill")


def pick_victim(cluster: BenchCluster, names: list[str], i: int) -> str:
    """A follower, alternating between the two."""
    leader = cluster.leader_name(names)
    followers = [n for n in names if n != leader]
    return followers[i % len(followers)]


def wait_dead(pid: int) -> None:
    while Path(f"/proc/{pid}").exists():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.001)


def wait_ports_free(address: str, timeout: float = 5.0) -> None:
    """Until etcd could bind its ports again (as Go does, with SO_REUSEADDR).

    A killed etcd's thread-group leader shows as a zombie while its other
    threads still hold the sockets: restarting at once can fail with
    "address already in use".
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for port in (2379, 2380):
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((address, port))
            return
        except OSError:
            time.sleep(0.001)
    raise TimeoutError(f"{address}: ports still busy {timeout}s after the kill")


def daemon_rep(cluster: BenchCluster, names: list[str], i: int) -> dict[str, Any]:
    cluster.wait_healthy(names, timeout=60)
    time.sleep(SETTLE)
    victim = pick_victim(cluster, names, i)
    pid = cluster.member_pid_fast(victim)
    assert pid
    mark = cluster.mark()
    wall0, t0 = time.time(), time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)
    healthy = asyncio.run(wait_healthy_member(cluster, victim, t0))
    time.sleep(0.2)
    restarted = None
    for e in cluster.events("op_step", since=mark):
        if e.get("op") == "restart-member" and e.get("step") == "start-process":
            end = dt.datetime.fromisoformat(e["timestamp"]).timestamp() - wall0
            restarted = round(end, 4)
            break
    return {"member": victim, "healthy": healthy, "daemon_started_it_at": restarted}


def baseline_rep(cluster: BenchCluster, names: list[str], i: int) -> dict[str, Any]:
    cluster.wait_healthy(names, timeout=60)
    time.sleep(SETTLE)
    victim = pick_victim(cluster, names, i)
    mdir = cluster.state_dir / "members" / victim
    info = json.loads((mdir / "etcd.pid").read_text())
    pid, cmd = int(info["pid"]), list(info["cmd"])
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_dead(pid)
    wait_ports_free(cluster.address_of(victim))
    with open(mdir / "etcd.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=mdir, start_new_session=True)
    started = time.monotonic() - t0
    stat = Path(f"/proc/{proc.pid}/stat").read_text()
    start_time = stat[stat.rindex(")") + 2:].split()[19]
    (mdir / "etcd.pid").write_text(json.dumps({"pid": proc.pid, "start_time": start_time,
                                               "cmd": cmd}))
    healthy = asyncio.run(wait_healthy_member(cluster, victim, t0))
    return {"member": victim, "healthy": healthy, "started": round(started, 4)}


def main() -> int:
    ap = cadence_parser(__doc__)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    cadence = Cadence.from_args(args.probe_interval)
    names = ["m1", "m2", "m3"]
    daemon_runs: list[dict[str, Any]] = []
    base_runs: list[dict[str, Any]] = []
    with bench_cluster(names, cadence, "repair") as c:
        for i in range(args.reps):
            r = daemon_rep(c, names, i)
            daemon_runs.append(r)
            print(f"daemon   {i + 1}/{args.reps} kill {r['member']}: healthy after "
                  f"{r['healthy']:.3f}s (restarted at {r['daemon_started_it_at']}s)", flush=True)
        stop_daemon(c)
        for i in range(args.reps):
            r = baseline_rep(c, names, i)
            base_runs.append(r)
            print(f"baseline {i + 1}/{args.reps} kill {r['member']}: healthy after "
                  f"{r['healthy']:.3f}s", flush=True)
    d = summary([r["healthy"] for r in daemon_runs])
    b = summary([r["healthy"] for r in base_runs])
    detect = summary([r["daemon_started_it_at"] for r in daemon_runs
                      if r["daemon_started_it_at"] is not None])
    result = {
        "unit": "seconds",
        "target": f"kill -9 to healthy <= {TARGET}s",
        "daemon": d,
        "baseline_manual_restart": b,
        "daemon_restart_issued": detect,
        "ratio_median": round(d["median"] / b["median"], 3),
        "met_median": d["median"] <= TARGET,
        "met_max": d["max"] <= TARGET,
        "daemon_runs": daemon_runs,
        "baseline_runs": base_runs,
    }
    path = write_result("repair", result, cadence)
    print(f"\nrepair (probe_interval {cadence.probe_interval}s, {args.reps} reps, followers):")
    print(f"  daemon    median {d['median']:.3f}s  max {d['max']:.3f}s  "
          f"(restart issued: median {detect['median']:.3f}s, max {detect['max']:.3f}s)")
    print(f"  baseline  median {b['median']:.3f}s  max {b['max']:.3f}s  (restart by hand at once)")
    print(f"  ratio     {result['ratio_median']:.2f}x; target <= {TARGET}s: median "
          f"{'met' if result['met_median'] else 'NOT met'}, max "
          f"{'met' if result['met_max'] else 'NOT met'}")
    if path:
        print(f"  -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

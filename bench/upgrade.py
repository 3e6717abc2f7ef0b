"""A rolling upgrade of 3 members (3.5.16 -> 3.5.30) under steady writes: the daemon
against a script doing the same restarts by hand, in the same run.

- daemon: `[etcd] binary` is edited in the config; the running daemon restarts
  the members one at a time (snapshot first, followers first, leadership moved
  off the leader before it restarts), each after the previous one is healthy
  and caught up.
- script: the daemon is stopped first; for each member in config order the
  script does what an operator's shell loop does: SIGTERM etcd, start the
  same command line (from its pidfile) on the new binary, poll `etcdctl
  endpoint health` until it answers, next member. It restarts the leader where
  it stands (no move-leader).

Load: one writer that behaves as a kube-apiserver (bench/filewriter.py): it
follows the etcd servers file the daemon keeps (`[apiserver]
etcd_servers_file`, re-read when it changes), one put at a time over kept TLS
channels, round robin over the members listed, a failed attempt retried on the
next one until acknowledged. The daemon takes a member out of the file before
it stops it, waits `[apiserver] drain_seconds`, and puts it back once it is
healthy again; the script leaves the file as the daemon last wrote it (every
member). Figures: total time from the change to every member healthy on the
new version; failed write attempts (each with what it hit: `errors`); the
longest stall (time one key took to be acknowledged) and what the daemon was
doing then; acknowledged keys lost (must be 0). Per run, where the time went:
the daemon's from its history (seconds in each kind of op step, before the
first step, between steps, after the last; each member's stop), the script's
per member (stop, start to healthy), and which member led. A stop is etcd's
own: after raft stops, etcd waits up to 1 s for its peer listener's
connections to close (embed.Etcd.Close), and a peer that reconnected in that
moment makes it wait the whole second; which stops do is etcd's race, and it
is most of the spread between runs. Results:
bench/results/upgrade.json.

    .venv/bin/python bench/upgrade.py [--runs 3]
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from _common import (
    ETCDCTL,
    ROOT,
    BenchCluster,
    Cadence,
    bench_cluster,
    cadence_parser,
    stop_daemon,
    wait_for,
    write_result,
    writer_runs,
)
from filewriter import ServersFileWriter, servers_file
from filewriter import apiserver_section as apiserver

from ckeetcd.support.files import write_atomic
from ckeetcd.support.history import History

ETCD_DIR = Path(os.environ.get("CKEETCD_ETCD_DIR", ROOT / ".etcd"))
OLD, NEW = ETCD_DIR / "3.5.16" / "etcd", ETCD_DIR / "3.5.30" / "etcd"
NAMES = ["m1", "m2", "m3"]


def versions(c: BenchCluster) -> dict[str, str]:
    out = {}
    for n in NAMES:
        h = c.status(n)
        out[n] = h.version if h is not None and h.healthy else ""
    return out


def all_on(c: BenchCluster, version: str) -> bool:
    return versions(c) == dict.fromkeys(NAMES, version)


def breakdown(c: BenchCluster, t0: float, t1: float) -> dict[str, Any]:
    """Where the daemon's time went between the config edit (wall time `t0`) and every
    member seen on the new version (`t1`), from its history: seconds inside each kind
    of op step, before the first step (reload, observe, plan), between steps (the
    observations that wait for the restarted member to be healthy and caught up, and
    the plan), and after the last step until the bench saw every member on the version."""
    rows = [r for r in History(c.state_dir).read()
            if r.get("event") in ("step-begin", "step-end") and t0 <= r["ts"] <= t1]
    spans, begun = [], {}
    for r in rows:
        key = (r["op"], r["step"], r["targets"])
        if r["event"] == "step-begin":
            begun[key] = r["ts"]
        elif key in begun:
            spans.append((begun.pop(key), r["ts"], f"{r['op']}:{r['step']}", r["targets"]))
    spans.sort()
    steps: dict[str, float] = {}
    stops: dict[str, float] = {}  # per member: etcd's own stop (SIGTERM to exit)
    for b, e, name, target in spans:
        steps[name] = round(steps.get(name, 0.0) + e - b, 3)
        if name == "stop-member:stop-process":
            stops[target] = round(e - b, 3)
    if not spans:
        return {"steps_s": {}}
    inside = sum(e - b for b, e, _, _ in spans)
    return {"before_first_step_s": round(spans[0][0] - t0, 3),
            "between_steps_s": round(spans[-1][1] - spans[0][0] - inside, 3),
            "after_last_step_s": round(t1 - spans[-1][1], 3),
            "steps_s": steps, "stop_s": stops}


def on_old_binary(c: BenchCluster) -> None:
    """Bootstrap `c` by its daemon on the old etcd, every member healthy on it and in
    the servers file."""
    c.write_config(NAMES, extra=apiserver(c))
    c.start_daemon(env={"CKEETCD_ETCD_BINARY": str(OLD)})
    c.wait_healthy(NAMES, timeout=90)
    wait_for(lambda: all_on(c, "3.5.16"), 60, "3.5.16 everywhere")
    every = ",".join(c.client_url(n) for n in NAMES) + "\n"
    wait_for(lambda: servers_file(c).exists() and servers_file(c).read_text() == every, 60,
             "every member in the servers file")


def during(c: BenchCluster | None, offset: float, start: float, end: float) -> list[str]:
    """The daemon's op steps that overlapped [start, end] (writer's monotonic clock;
    `offset` turns it into the history's wall clock); [] for the script."""
    if c is None:
        return []
    rows = [r for r in History(c.state_dir).read()
            if r.get("event") in ("step-begin", "step-end")]
    begun: dict[tuple[str, str, str], float] = {}
    out = []
    for r in rows:
        key = (r["op"], r["step"], r["targets"])
        if r["event"] == "step-begin":
            begun[key] = r["ts"]
        elif key in begun:
            b = begun.pop(key)
            if b <= end + offset and r["ts"] >= start + offset:
                out.append(f"{r['op']}:{r['step']} {r['targets']}")
    return out


def result(w: ServersFileWriter, total: float, leader: str, breakdown: dict[str, Any],
           c: BenchCluster | None = None, offset: float = 0.0) -> dict[str, Any]:
    """One run's figures, the same for both sides."""
    errors = [{**e, "during": during(c, offset, e["at"], e["at"] + e["took"])}
              for e in w.errors]
    return {"total_s": round(total, 3), "failed_writes": w.failures,
            "longest_stall_s": round(w.max_outage, 3),
            "longest_stall_during": during(c, offset, w.max_outage_at,
                                           w.max_outage_at + w.max_outage),
            "lost": len(w.lost(NAMES[0])), "acked": len(w.acked), "leader": leader,
            "errors": [{k: v for k, v in e.items() if k != "at"} for e in errors],
            "breakdown": breakdown}


def daemon_run(cadence: Cadence) -> dict[str, Any]:
    with bench_cluster(NAMES, cadence, "upgrade-daemon", start=False) as c:
        on_old_binary(c)
        with ServersFileWriter(c, servers_file(c)) as w:
            wait_for(lambda: len(w.acked) > 50, 30, "writes flowing")
            leader = c.leader_name(NAMES)
            start, wall = time.monotonic(), time.time()
            c.write_config(NAMES, extra=apiserver(c) + f'[etcd]\nbinary = "{NEW}"\n')
            wait_for(lambda: all_on(c, "3.5.30"), 300, "3.5.30 everywhere", interval=0.02)
            total = time.monotonic() - start
            seen = len(w.acked)
            wait_for(lambda: len(w.acked) > seen + 20, 10, "writes after the upgrade")
        return result(w, total, leader, breakdown(c, wall, wall + total), c, wall - start)


def restart_by_hand(c: BenchCluster, name: str) -> tuple[float, float]:
    """(seconds to stop, seconds from the new start to healthy)."""
    t0 = time.monotonic()
    pidfile = c.state_dir / "members" / name / "etcd.pid"
    info = json.loads(pidfile.read_text())
    pid, cmd = int(info["pid"]), [str(NEW), *info["cmd"][1:]]
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 30, f"{name} gone",
             interval=0.01)
    mdir = c.state_dir / "members" / name
    t1 = time.monotonic()
    with open(mdir / "etcd.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=mdir, start_new_session=True)
    stat = Path(f"/proc/{proc.pid}/stat").read_text()
    start_time = stat[stat.rindex(")") + 2:].split()[19]
    write_atomic(pidfile, json.dumps({"pid": proc.pid, "start_time": start_time,
                                      "cmd": cmd}).encode(), 0o600)
    tls = c.root_tls()

    def healthy() -> bool:
        r = subprocess.run([ETCDCTL, f"--endpoints={c.client_url(name)}",
                            f"--cacert={tls.ca}", f"--cert={tls.cert}", f"--key={tls.key}",
                            "endpoint", "health", "--command-timeout=1s"],
                           capture_output=True, text=True, timeout=10)
        return r.returncode == 0

    wait_for(healthy, 60, f"{name} healthy", interval=0.05)
    return round(t1 - t0, 3), round(time.monotonic() - t1, 3)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X")


def script_run(cadence: Cadence) -> dict[str, Any]:
    with bench_cluster(NAMES, cadence, "upgrade-script", start=False) as c:
        on_old_binary(c)
        stop_daemon(c)
        with ServersFileWriter(c, servers_file(c)) as w:
            wait_for(lambda: len(w.acked) > 50, 30, "writes flowing")
            leader = c.leader_name(NAMES)
            start = time.monotonic()
            steps = {n: restart_by_hand(c, n) for n in NAMES}
            wait_for(lambda: all_on(c, "3.5.30"), 60, "3.5.30 everywhere", interval=0.02)
            total = time.monotonic() - start
        return result(w, total, leader,
                      {"stop_s": {n: s for n, (s, _) in steps.items()},
                       "start_to_healthy_s": {n: h for n, (_, h) in steps.items()}})


def main() -> None:
    ap = cadence_parser(__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not (OLD.exists() and NEW.exists()):
        raise SystemExit("scripts/fetch-etcd 3.5.16 3.5.30 first")
    cadence = Cadence.from_args(args.probe_interval)
    runs: dict[str, list[dict[str, Any]]] = {"daemon": [], "script": []}
    for i in range(args.runs):  # alternating, so drift hits both alike
        runs["daemon"].append(daemon_run(cadence))
        runs["script"].append(script_run(cadence))
        print(f"run {i + 1}: daemon {runs['daemon'][-1]}  script {runs['script'][-1]}",
              flush=True)
    out: dict[str, Any] = {"when": dt.datetime.now(dt.timezone.utc).isoformat(),
                           "from": "3.5.16", "to": "3.5.30", "cadence": cadence.__dict__}
    for k, rs in runs.items():
        out[k] = writer_runs(rs)
    out["ratio_total"] = round(out["daemon"]["total_s"]["median"]
                               / out["script"]["total_s"]["median"], 3)
    write_result("upgrade", out)
    print(json.dumps({k: out[k] for k in ("ratio_total",)}, indent=1))


if __name__ == "__main__":
    main()

"""Backup and restore of a ~100 MB database: ckeetcd against etcd's own tools, in one run.

One 3-member TLS + RBAC cluster (bootstrapped by the daemon, which is then
stopped so that it does not compete for the CPU) is filled with 512 KiB
values until etcd reports a database of `--mb` MB.

backup (target: median ratio <= 1.1)
  ours:      `ckecli etcd local-backup -dir=D -max-backups=2`, a fresh process
             (imports, CA load, in-memory root cert, member probe, snapshot,
             fsync, SHA-256 check, rotation);
  baseline:  `etcdctl snapshot save D/ctl-N.db` (also fsyncs; keeps 2 too),
             against the members in turn (local-backup picks whichever
             healthy voter answers first).
  also:      `take_backup()` in this process on a fresh channel (what the
             daemon's scheduled backups run), to separate the transfer from
             the fixed cost of starting a Python process (`cli_fixed_cost_s`).
  Runs rotate their order, after one warm-up each.

restore (target: median ratio <= 1.3)
  Each run starts from the same disaster: m2 and m3 killed (SIGKILL), m1 up,
  quorum lost. The clock stops when every member's own Status RPC says it is
  healthy (polled every 10 ms on fresh channels).
  ours:      `ckeetcd restore --from SNAP --yes` (fresh process: snapshot
             check, quorum probe, stop m1, data aside, 3 x etcdutl restore,
             start, wait healthy, RBAC check), then the same health poll;
  baseline:  what a careful script does by hand: stop m1, move the data dirs
             aside, `etcdutl snapshot restore` for the three members at once,
             start them with their usual command lines, poll health.

Run: .venv/bin/python bench/backup.py [--runs 5] [--mb 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    ETCDCTL,
    BenchCluster,
    Cadence,
    EtcdClient,
    EtcdError,
    bench_cluster,
    stop_daemon,
    summary,
    write_result,
)

from ckeetcd.nodes.local import _proc_start_time, resolve_etcdutl_binary
from ckeetcd.tasks.backup import take_backup

BIN = Path(sys.executable).parent
CKECLI = str(BIN / "ckecli")
CKEETCD = str(BIN / "ckeetcd")
NAMES = ["m1", "m2", "m3"]
BACKUP_TARGET = 1.1
RESTORE_TARGET = 1.3
POLL = 0.01


def db_size(cluster: BenchCluster) -> int:
    h = cluster.status("m1", timeout=5)
    return int(h.db_size) if h is not None else 0


def fill(cluster: BenchCluster, megabytes: int) -> int:
    """512 KiB values until the database reaches `megabytes` MB; returns the keys written."""
    value = os.urandom(512 * 1024)
    target = megabytes * 1_000_000

    async def go() -> int:
        n = 0
        async with EtcdClient(cluster.client_url("m1"), cluster.root_tls(), timeout=10) as c:
            while (await c.status()).db_size < target:
                for _ in range(10):
                    await c.put(f"/bench/{n:06d}".encode(), value)
                    n += 1
        return n

    return asyncio.run(go())


def run(cmd: list[str], env: dict[str, str] | None = None, input: str | None = None) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, input=input,
                       env={**os.environ, **(env or {})})
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return took


# ---- backup ----------------------------------------------------------------------


def bench_backup(cluster: BenchCluster, runs: int, folder: Path) -> dict[str, Any]:
    ours_dir, ctl_dir = folder / "ours", folder / "etcdctl"
    ours_dir.mkdir()
    ctl_dir.mkdir()
    tls = cluster.root_tls()
    counter = iter(range(10**6))

    def ours() -> float:
        return run([CKECLI, "etcd", "local-backup", f"-dir={ours_dir}", "-max-backups=2",
                    "--config", str(cluster.config_path)])

    def etcdctl() -> float:
        i = next(counter)
        endpoint = cluster.client_url(NAMES[i % len(NAMES)])
        took = run([ETCDCTL, f"--endpoints={endpoint}", f"--cacert={tls.ca}",
                    f"--cert={tls.cert}", f"--key={tls.key}", "snapshot", "save",
                    str(ctl_dir / f"ctl-{i:04d}.db")], env={"ETCDCTL_API": "3"})
        for old in sorted(ctl_dir.glob("ctl-*.db"))[:-2]:
            old.unlink()
        return took

    def library() -> float:
        """take_backup in this process (what the daemon's scheduled backups run)."""
        i = next(counter)
        endpoint = cluster.client_url(NAMES[i % len(NAMES)])

        async def go() -> float:
            t = time.perf_counter()
            async with EtcdClient(endpoint, tls, timeout=5) as client:
                await take_backup(client, lib_dir, 2)
            return time.perf_counter() - t

        return asyncio.run(go())

    lib_dir = folder / "library"
    lib_dir.mkdir()
    jobs = {"local_backup": ours, "etcdctl_snapshot_save": etcdctl, "library_take_backup": library}
    for job in jobs.values():
        job()  # warm-up
    samples: dict[str, list[float]] = {k: [] for k in jobs}
    order = list(jobs)
    for _ in range(runs):
        for k in order:
            samples[k].append(jobs[k]())
        order = order[1:] + order[:1]  # nobody always goes first
    snap = sorted(ours_dir.glob("etcd-*.backup"))[-1]
    med = {k: statistics.median(v) for k, v in samples.items()}
    ratio = med["local_backup"] / med["etcdctl_snapshot_save"]
    return {
        "snapshot_bytes": snap.stat().st_size,
        "seconds": {k: summary(v) for k, v in samples.items()},
        "ratio_median": round(ratio, 3),
        "library_ratio_median": round(med["library_take_backup"]
                                      / med["etcdctl_snapshot_save"], 3),
        "cli_fixed_cost_s": round(med["local_backup"] - med["library_take_backup"], 3),
        "target_ratio": BACKUP_TARGET,
        "met": ratio <= BACKUP_TARGET,
        "snapshot": str(snap),
    }


# ---- restore ---------------------------------------------------------------------


def pidfile(cluster: BenchCluster, name: str) -> Path:
    return cluster.state_dir / "members" / name / "etcd.pid"


def disaster(cluster: BenchCluster) -> None:
    """m2 and m3 die (SIGKILL); m1 stays up alone: quorum lost."""
    for name in ("m2", "m3"):
        pid = cluster.member_pid_fast(name)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(cluster.member_pid_fast(n) for n in ("m2", "m3")):
        if time.monotonic() > deadline:
            raise SystemExit("killed members did not die")
        time.sleep(0.01)


async def all_healthy(cluster: BenchCluster, t0: float, timeout: float = 120) -> float:
    tls = cluster.root_tls()
    while time.monotonic() - t0 < timeout:
        ok = True
        for name in NAMES:
            async with EtcdClient(cluster.client_url(name), tls, timeout=0.2) as c:
                try:
                    h = await c.status()
                except EtcdError:
                    h = None
            if h is None or not h.healthy:
                ok = False
                break
        if ok:
            return time.monotonic() - t0
        await asyncio.sleep(POLL)
    raise TimeoutError("cluster not healthy after the restore")


def clear_archives(cluster: BenchCluster) -> None:
    for d in cluster.state_dir.glob("members/*/data.*"):
        shutil.rmtree(d)


def restore_ours(cluster: BenchCluster, snap: Path) -> float:
    disaster(cluster)
    t0 = time.monotonic()
    run([CKEETCD, "restore", "--from", str(snap), "--yes", "--config", str(cluster.config_path)])
    took = asyncio.run(all_healthy(cluster, t0))
    clear_archives(cluster)
    return took


def restore_baseline(cluster: BenchCluster, snap: Path, etcdutl: str) -> float:
    cmds = {n: json.loads(pidfile(cluster, n).read_text())["cmd"] for n in NAMES}
    disaster(cluster)
    t0 = time.monotonic()
    pid = cluster.member_pid_fast("m1")
    if pid is not None:  # stop m1, as the operator would
        os.kill(pid, signal.SIGTERM)
        while cluster.member_pid_fast("m1") is not None:
            time.sleep(POLL)
    mdir = cluster.state_dir / "members"
    stamp = time.strftime("%Y%m%d%H%M%S")
    for n in NAMES:
        if (mdir / n / "data").exists():
            (mdir / n / "data").rename(mdir / n / f"data.bench-{stamp}")
    initial = ",".join(f"{n}=https://{cluster.address_of(n)}:2380" for n in NAMES)
    procs = [subprocess.Popen(
        [etcdutl, "snapshot", "restore", str(snap), f"--name={n}", f"--initial-cluster={initial}",
         "--initial-cluster-token=bench", f"--initial-advertise-peer-urls=https://"
         f"{cluster.address_of(n)}:2380", f"--data-dir={mdir / n / 'data'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for n in NAMES]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("etcdutl snapshot restore failed")
    for n in NAMES:
        with open(mdir / n / "etcd.log", "ab") as log:
            p = subprocess.Popen(cmds[n], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, cwd=mdir / n, start_new_session=True)
        # A pidfile like the runtime's, so later runs and the cleanup can stop it.
        pidfile(cluster, n).write_text(json.dumps(
            {"pid": p.pid, "start_time": _proc_start_time(p.pid), "cmd": cmds[n]}))
    took = asyncio.run(all_healthy(cluster, t0))
    clear_archives(cluster)
    return took


def bench_restore(cluster: BenchCluster, runs: int, snap: Path) -> dict[str, Any]:
    etcdutl = resolve_etcdutl_binary("")
    restore_ours(cluster, snap)
    restore_baseline(cluster, snap, etcdutl)
    samples: dict[str, list[float]] = {"ckeetcd_restore": [], "etcdutl_restore_and_start": []}
    for i in range(runs):
        pair = [("ckeetcd_restore", lambda: restore_ours(cluster, snap)),
                ("etcdutl_restore_and_start", lambda: restore_baseline(cluster, snap, etcdutl))]
        for key, job in pair[::-1] if i % 2 else pair:
            samples[key].append(job())
    ratio = (statistics.median(samples["ckeetcd_restore"])
             / statistics.median(samples["etcdutl_restore_and_start"]))
    return {
        "seconds": {k: summary(v) for k, v in samples.items()},
        "ratio_median": round(ratio, 3),
        "target_ratio": RESTORE_TARGET,
        "met": ratio <= RESTORE_TARGET,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--output", default="backup")
    args = ap.parse_args()
    cadence = Cadence.shipped()
    work = Path(tempfile.mkdtemp(prefix="ckeetcd-bench-backup-files-"))
    try:
        with bench_cluster(NAMES, cadence, "backup") as cluster:
            t = time.perf_counter()
            keys = fill(cluster, args.mb)
            print(f"filled {keys} keys in {time.perf_counter() - t:.1f}s; "
                  f"db {db_size(cluster)} bytes", file=sys.stderr)
            stop_daemon(cluster)
            backup = bench_backup(cluster, args.runs, work)
            print(json.dumps(backup, indent=2), file=sys.stderr)
            snap = Path(backup.pop("snapshot"))
            kept = work / "snapshot.db"
            shutil.copyfile(snap, kept)
            restore = bench_restore(cluster, args.runs, kept)
            print(json.dumps(restore, indent=2), file=sys.stderr)
            result = {"db_bytes": db_size(cluster), "keys": keys, "runs": args.runs,
                      "backup": backup, "restore": restore}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = write_result(args.output, result, cadence)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

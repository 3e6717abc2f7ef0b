"""Replace a member by a config edit, against the same replacement by hand.

Three identical 3-member clusters (TLS + RBAC, bootstrapped by the daemon):

- daemon: the config file of the running daemon swaps the newest member for a
  fresh one (m3 -> m4, then m4 -> m5, ...); timed from the config write.
- floor: that cluster's daemon is stopped and a script does the replacement
  with plain etcdctl: `member remove` (the removed etcd exits by itself),
  `member add --learner`, start etcd with the daemon's own command line
  (ckeetcd.nodes.member_flags, --initial-cluster-state=existing), `member
  promote` sent to the leader (etcd #20757), retried every 50 ms until it
  works. Certificates for the newcomer are issued before t0.
- floor_seed: the same script, but first it stops the old member's etcd
  (SIGTERM, wait for the exit), as the seed page's order (and the daemon) do.

All end when one and the same poller sees the new member voting (member list
of a member that stays) and healthy (its own Status RPC, fresh channel).
Repetitions are interleaved; before each, the cluster has been healthy for
6 s (etcd refuses MemberAdd for 5 s after a voter connects) and the leader is
moved off the member that leaves, so no run pays for an election.

Run: .venv/bin/python bench/replace.py [--reps 7] [--probe-interval S]
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
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
    cadence_parser,
    stop_daemon,
    summary,
    wait_for,
    write_result,
)

from ckeetcd.core.config import load_config
from ckeetcd.nodes import LocalRuntime, MemberSpec, member_flags, resolve_etcd_binary
from ckeetcd.pki import load_ca, member_tls_files

TARGET_RATIO = 1.5
POLL = 0.01
PROMOTE_RETRY = 0.05


# ---- the shared end condition ----------------------------------------------------
async def wait_voting_healthy(cluster: BenchCluster, anchor: str, name: str, t0: float,
                              timeout: float = 120) -> dict[str, float]:
    """Seconds after t0 until `name` is a voter (anchor's member list) and healthy."""
    tls = cluster.root_tls()
    peer = f"https://{cluster.address_of(name)}:2380"
    url = cluster.client_url(name)
    out: dict[str, float] = {}
    async with EtcdClient(cluster.client_url(anchor), tls, timeout=1.0) as a:
        while time.monotonic() - t0 < timeout:
            if "voter" not in out:
                try:
                    members = await a.member_list()
                except EtcdError:
                    members = ()
                m = next((m for m in members if peer in m.peer_urls), None)
                if m is not None and not m.learner:
                    out["voter"] = time.monotonic() - t0
            if "voter" in out:
                async with EtcdClient(url, tls, timeout=0.5) as c:
                    try:
                        h = await c.status()
                    except EtcdError:
                        h = None
                if h is not None and h.healthy:
                    out["healthy"] = time.monotonic() - t0
                    return out
            await asyncio.sleep(POLL)
    raise TimeoutError(f"{name} not voting and healthy after {timeout}s")


def keep_leader_off(cluster: BenchCluster, names: list[str], leaving: str) -> None:
    """Move leadership to names[0] when the member about to leave leads."""
    leader = cluster.leader_name(names)
    if leader != leaving:
        return
    target = cluster.member_id(names[0])
    r = cluster.etcdctl("move-leader", format(target, "x"),
                        endpoints=cluster.client_url(leaving))
    if r.returncode != 0:
        raise RuntimeError(f"move-leader failed: {r.stderr}")
    wait_for(lambda: cluster.leader_name(names) == names[0], 20, "leader moved")


SETTLE = 6.0  # etcd refuses MemberAdd for 5 s after a voter (re)connects to its peers


def settle(cluster: BenchCluster, names: list[str]) -> None:
    cluster.wait_healthy(names, timeout=60)
    time.sleep(SETTLE)


# ---- the daemon ------------------------------------------------------------------
def daemon_rep(cluster: BenchCluster, names: list[str], old: str, new: str) -> dict[str, Any]:
    cluster.fresh_address_of(new)
    keep_leader_off(cluster, names, old)
    after = [n for n in names if n != old] + [new]
    mark = cluster.mark()
    wall0, t0 = time.time(), time.monotonic()
    cluster.write_config(after)
    times = asyncio.run(wait_voting_healthy(cluster, names[0], new, t0))
    time.sleep(0.3)  # let the last log lines land
    return {"from": old, "to": new, **times, "timeline": timeline(cluster, mark, wall0),
            "etcd": etcd_marks(cluster, new, wall0)}


ETCD_MARKS = (
    (("raft.node: ", "elected leader"), "has_leader"),
    (("serving client traffic securely",), "serving_clients"),
)


def etcd_marks(cluster: BenchCluster, name: str, wall0: float) -> dict[str, float]:
    """When the new member's etcd first knew a leader and served clients (its own log)."""
    out: dict[str, float] = {}
    try:
        lines = (cluster.state_dir / "members" / name / "etcd.log").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        msg = str(e.get("msg", ""))
        for needles, label in ETCD_MARKS:
            if label not in out and all(n in msg for n in needles):
                out[label] = round(dt.datetime.fromisoformat(e["ts"]).timestamp() - wall0, 4)
    return out


def timeline(cluster: BenchCluster, mark: int, wall0: float) -> list[dict[str, Any]]:
    """The daemon's op steps, cycles and health changes, as seconds after the config write."""
    out = []
    for e in cluster.events(since=mark):
        if e.get("event") not in ("config_reloaded", "op_step", "cycle", "health"):
            continue
        ts = dt.datetime.fromisoformat(e["timestamp"]).timestamp() - wall0
        row: dict[str, Any] = {"at": round(ts, 4), "event": e["event"]}
        for k in ("op", "step", "duration", "outcome", "phase", "ops", "error"):
            if k in e:
                row[k] = e[k]
        if e["event"] == "health":
            row["members"] = " ".join(
                f"{m['name'] or m['id'][:4]}{'(L)' if m['learner'] else ''}"
                f"{'+' if m['healthy'] else '-'}" for m in e.get("members", []))
        out.append(row)
    return out


# ---- the floor -------------------------------------------------------------------
async def etcdctl(cluster: BenchCluster, endpoint: str, *args: str) -> tuple[int, str]:
    tls = cluster.root_tls()
    proc = await asyncio.create_subprocess_exec(
        ETCDCTL, f"--endpoints={endpoint}", f"--cacert={tls.ca}", f"--cert={tls.cert}",
        f"--key={tls.key}", "--dial-timeout=3s", "--command-timeout=5s", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "ETCDCTL_API": "3"})
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def floor_script(cluster: BenchCluster, names: list[str], old: str, new: str,
                       old_id: int, leader_url: str, t0: float,
                       stop_first: bool) -> dict[str, Any]:
    """The replacement with plain etcdctl; returns when promote succeeded."""
    config = load_config(cluster.config_path)
    marks: dict[str, Any] = {}
    # 1. (seed order only) stop the old member's etcd: SIGTERM, wait for the exit
    pid = cluster.member_pid_fast(old)
    if stop_first and pid:
        os.kill(pid, signal.SIGTERM)
        while cluster.member_pid_fast(old) == pid:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        marks["stopped"] = time.monotonic() - t0
    # 2. member remove
    rc, out = await etcdctl(cluster, leader_url, "member", "remove", format(old_id, "x"))
    if rc:
        raise RuntimeError(f"member remove: {out}")
    marks["removed"] = time.monotonic() - t0
    # 3. member add --learner (retried while etcd says the cluster is unhealthy)
    peer = f"https://{cluster.address_of(new)}:2380"
    adds = 0
    while True:
        adds += 1
        rc, out = await etcdctl(cluster, leader_url, "member", "add", new,
                                f"--peer-urls={peer}", "--learner")
        if rc == 0:
            break
        if "unhealthy cluster" not in out:
            raise RuntimeError(f"member add: {out}")
        await asyncio.sleep(PROMOTE_RETRY)
    found = re.search(r"Member\s+([0-9a-f]+)\s+added", out)
    if found is None:
        raise RuntimeError(f"member add: no member ID in {out!r}")
    new_id = int(found.group(1), 16)
    marks["added"] = time.monotonic() - t0
    marks["add_attempts"] = adds
    # 4. start etcd with the daemon's own flags, --initial-cluster-state=existing
    stay = [n for n in names if n != old]
    spec = MemberSpec(
        name=new, client_url=cluster.client_url(new), peer_url=peer,
        cluster_token=config.cluster.name,
        initial_cluster=tuple((n, f"https://{cluster.address_of(n)}:2380")
                              for n in [*stay, new]),
        initial_state="existing")
    mdir = cluster.state_dir / "members" / new
    cmd = [resolve_etcd_binary(config.etcd.binary),
           *member_flags(spec, mdir / "data", mdir / "tls", config.etcd)]
    with open(mdir / "etcd.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=mdir, start_new_session=True)
    marks["started"] = time.monotonic() - t0
    write_pidfile(mdir, proc.pid, cmd)
    # 5. member promote at the leader, retried until it works
    promotes = 0
    while True:
        promotes += 1
        rc, out = await etcdctl(cluster, leader_url, "member", "promote", format(new_id, "x"))
        if rc == 0:
            break
        if "in sync with leader" not in out and "not ready" not in out:
            raise RuntimeError(f"member promote: {out}")
        await asyncio.sleep(PROMOTE_RETRY)
    marks["promoted"] = time.monotonic() - t0
    marks["promote_attempts"] = promotes
    return marks


def write_pidfile(mdir: Path, pid: int, cmd: list[str]) -> None:
    """The runtime's pidfile format, so the harness cleanup stops this etcd too."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    start = stat[stat.rindex(")") + 2:].split()[19]
    (mdir / "etcd.pid").write_text(json.dumps({"pid": pid, "start_time": start, "cmd": cmd}))


def floor_prepare(cluster: BenchCluster, new: str) -> None:
    """Untimed: the newcomer's certificates in place, its data dir absent."""
    cluster.fresh_address_of(new)
    config = load_config(cluster.config_path)
    ca = load_ca(cluster.state_dir / "pki")
    runtime = LocalRuntime(cluster.state_dir, config.etcd)
    asyncio.run(runtime.install_tls(new, member_tls_files(ca, new, cluster.address_of(new))))


def floor_rep(cluster: BenchCluster, names: list[str], old: str, new: str,
              stop_first: bool = False) -> dict[str, Any]:
    floor_prepare(cluster, new)
    keep_leader_off(cluster, names, old)
    old_id = cluster.member_id(old)
    leader = cluster.leader_name(names)
    assert leader is not None and leader != old
    leader_url = cluster.client_url(leader)

    async def go() -> dict[str, Any]:
        wall0, t0 = time.time(), time.monotonic()
        poll = asyncio.create_task(wait_voting_healthy(cluster, names[0], new, t0))
        try:
            marks = await floor_script(cluster, names, old, new, old_id, leader_url, t0,
                                       stop_first)
            times = await poll
        finally:
            poll.cancel()
        await asyncio.sleep(0.1)
        return {"from": old, "to": new, **times, "script": marks,
                "etcd": etcd_marks(cluster, new, wall0)}

    result = asyncio.run(go())
    if not stop_first:  # the removed etcd exits by itself; wait, so the next rep is clean
        pid = cluster.member_pid_fast(old)
        if pid:
            wait_for(lambda: cluster.member_pid_fast(old) != pid, 30, f"removed {old} exited")
    # the config follows, so the harness (and cleanup) know the new member
    cluster.write_config([n for n in names if n != old] + [new])
    return result


# ---- main ------------------------------------------------------------------------
def floor_seed_rep(cluster: BenchCluster, names: list[str], old: str,
                   new: str) -> dict[str, Any]:
    return floor_rep(cluster, names, old, new, stop_first=True)


VARIANTS = (("floor", floor_rep), ("floor_seed", floor_seed_rep), ("daemon", daemon_rep))


def main() -> int:
    ap = cadence_parser(__doc__)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    cadence = Cadence.from_args(args.probe_interval)
    base = ["m1", "m2", "m3"]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v, _ in VARIANTS}
    with contextlib.ExitStack() as stack:
        clusters = {v: stack.enter_context(bench_cluster(base, cadence, f"replace-{v}"))
                    for v, _ in VARIANTS}
        for v, c in clusters.items():
            if v != "daemon":
                stop_daemon(c)
        names = {v: list(base) for v, _ in VARIANTS}
        for i in range(args.reps):
            new = f"m{4 + i}"
            for v, rep in VARIANTS:
                settle(clusters[v], names[v])
                r = rep(clusters[v], names[v], names[v][-1], new)
                names[v][:] = [*names[v][:-1], new]
                runs[v].append(r)
                print(f"rep {i + 1}/{args.reps} {v:10s} {r['from']}->{r['to']}: "
                      f"voting {r['voter']:.3f}s, healthy {r['healthy']:.3f}s", flush=True)
    s = {v: summary([r["healthy"] for r in runs[v]]) for v, _ in VARIANTS}
    ratio = s["daemon"]["median"] / s["floor"]["median"]
    ratio_seed = s["daemon"]["median"] / s["floor_seed"]["median"]
    stops = [r["script"]["stopped"] for r in runs["floor_seed"]]
    daemon_stops = [t["duration"] for r in runs["daemon"] for t in r["timeline"]
                    if t.get("step") == "stop-process"]
    result = {
        "unit": "seconds",
        "target": f"daemon median <= {TARGET_RATIO}x floor median",
        **s,
        "ratio": round(ratio, 3),
        "ratio_vs_floor_seed": round(ratio_seed, 3),
        "met": ratio <= TARGET_RATIO,
        "met_vs_floor_seed": ratio_seed <= TARGET_RATIO,
        "sigterm_stop_seconds": {"floor_seed": summary(stops), "daemon": summary(daemon_stops)},
        "runs": runs,
    }
    path = write_result("replace", result, cadence)
    print(f"\nreplace (probe_interval {cadence.probe_interval}s, {args.reps} reps), "
          "config edit / first command -> new member voting and healthy:")
    for v, _ in VARIANTS:
        print(f"  {v:10s} median {s[v]['median']:.3f}s  (min {s[v]['min']:.3f}, "
              f"max {s[v]['max']:.3f})")
    print(f"  ratio daemon/floor      {ratio:.2f}x (target <= {TARGET_RATIO}x: "
          f"{'met' if result['met'] else 'NOT met'})")
    print(f"  ratio daemon/floor_seed {ratio_seed:.2f}x "
          f"({'met' if result['met_vs_floor_seed'] else 'NOT met'})")
    print(f"  SIGTERM stop of the old etcd: median {summary(stops)['median']:.3f}s (floor_seed), "
          f"{summary(daemon_stops)['median']:.3f}s (daemon)")
    if path:
        print(f"  -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The soak's workload and checker in the namespace lab: faults by host, not by process.

The engine (tests/soak/engine.py) drives one cluster on loopback from the
test process. In the lab (tests/netns.py, tests/multihost.py) the members
live on a subnet only the lab's namespaces see, each node with its own
daemon and its own etcd servers file. So here:
- the workload (tests/soak/workload.py, unchanged: its own process, gRPC,
  the `[[users]]` user "soak") runs inside the namespace of a client host
  that holds no member (`ip netns exec`), following the servers file of one
  node, as a kube-apiserver on that node would;
- a fault is a partition (a host's link down, `ip link set eth0 down`) or a
  slow link (tests/slowlink.py: a host's link rate-limited with a bounded
  queue, and lossy, both ways), a hold, the link healed; the run waits
  until every member is a healthy voter and every daemon's servers file
  lists all of them, and until a write is acknowledged after that;
- the final store, each member's own copy and the soak role are read with
  etcdctl inside the lab; the history goes through the same checker.

A daemon whose own node is cut off sees its side without quorum and says so
(`quorum_lost`): in that daemon's log, and only there, a partition of its
own node explains it (checker.EXPLAINED["partition-own-node"]).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckeetcd.support.files import write_atomic, write_private
from tests.harness import BIN, cli_env, terminate
from tests.multihost import PY, MultiCluster
from tests.slowlink import Shape
from tests.soak import checker, figures
from tests.soak.figures import FaultRecord
from tests.soak.history import OK, HistoryTail, read_history
from tests.soak.workload import WorkloadSpec

SOAK_USER, SOAK_PREFIX = "soak", "/soak/"
USERS_EXTRA = f'[[users]]\nname = "{SOAK_USER}"\nprefix = "{SOAK_PREFIX}"\n'
POLL = 0.05
PING_EVERY = 0.2  # s between two pings across a slow link


@dataclass
class LabReport:
    faults: list[FaultRecord]
    writes: checker.WriteVerdict
    order: checker.OrderVerdict
    errors: dict[str, checker.LogVerdict]  # per daemon
    final: list[str]
    figures: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        return [*self.writes.violations, *self.order.violations, *self.final,
                *(f"unexplained error on {d}: {e}" for d, v in self.errors.items()
                  for e in v.unexplained)]


def own_node(kind: str) -> str:
    """The cause a fault of a daemon's own node is to that daemon: "partition-leader-node"
    -> "partition-own-node", "slow-link-follower-node" -> "slow-link-own-node"."""
    for family in ("partition", "slow-link"):
        if kind.startswith(family + "-"):
            return f"{family}-own-node"
    return kind


class LabSoak:
    def __init__(self, c: MultiCluster, client_host: str, follow: str, writers: int = 4,
                 readers: int = 2, issuer: str | None = None) -> None:
        self.c = c
        self.client_host = client_host
        self.follow = follow  # whose node's servers file the clients follow
        self.issuer = issuer or follow  # a daemon host with the CA key: ckecli issues there
        self.dir = c.root / "soak"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.history = self.dir / "history.jsonl"
        self.writers, self.readers = writers, readers
        self.faults: list[FaultRecord] = []
        self.workload: subprocess.Popen[bytes] | None = None
        self._tail = HistoryTail(self.history)
        self._last_ack = 0.0
        self._marks = c.marks()
        self._role_before = ""

    def __enter__(self) -> LabSoak:
        return self

    def __exit__(self, *exc: object) -> None:
        terminate(self.workload, 30)

    def issue(self, host: str | None = None) -> dict[str, str]:
        """The soak user's certificate and `ca_certificate` (ckecli on `host`, as an
        operator would), written for the clients: the CA and the key first, the
        certificate last, each by a rename (the workload reloads on a new certificate)."""
        h = host or self.issuer
        r = self.c.lab.exec(h, str(BIN / "ckecli"), "etcd", "issue", "-ttl=24h",
                            "-output=json", SOAK_USER, env=cli_env(self.c.config_path(h)))
        assert r.returncode == 0, f"ckecli etcd issue: {r.stderr[-1000:]}"
        bundle: dict[str, str] = json.loads(r.stdout)
        certs = self.dir / "certs"
        certs.mkdir(mode=0o700, exist_ok=True)
        write_atomic(certs / "ca.crt", bundle["ca_certificate"].encode())
        write_private(certs / "soak.key", bundle["private_key"].encode())  # 0600 at once
        write_atomic(certs / "soak.crt", bundle["certificate"].encode())
        return bundle

    def start(self) -> None:
        """The soak user's certificate (ckecli, as an operator), then the clients."""
        h = self.follow
        self.issue()
        certs = self.dir / "certs"
        key = certs / "soak.key"
        self._role_before = self.role()
        assert SOAK_PREFIX in self._role_before, self._role_before
        spec = WorkloadSpec(servers_file=str(self.c.servers_file(h)), ca=str(certs / "ca.crt"),
                            cert=str(certs / "soak.crt"), key=str(key), prefix=SOAK_PREFIX,
                            history=str(self.history), run_id="lab", writers=self.writers,
                            readers=self.readers)
        path = spec.write(self.dir / "workload.json")
        root = Path(__file__).resolve().parents[2]
        self.workload = self.c.lab.popen(
            self.client_host, [PY, "-m", "tests.soak.workload", str(path)],
            self.dir / "workload.log", env={"PYTHONPATH": str(root)})
        self.wait_resumed(time.monotonic(), 60)

    def wait_resumed(self, after: float, timeout: float) -> float:
        """The end of the first acknowledged put after `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self._tail.new():
                if r.kind == "put" and r.outcome == OK:
                    self._last_ack = max(self._last_ack, r.end)
            if self._last_ack > after:
                return self._last_ack
            assert self.workload is not None and self.workload.poll() is None, \
                f"the workload exited: {(self.dir / 'workload.log').read_text()[-2000:]}"
            time.sleep(POLL)
        raise AssertionError(f"no write acknowledged within {timeout:g}s")

    def steady(self) -> bool:
        want = [self.c.url(m) for m in self.c.members]
        return self.c.voters(self.follow) == set(self.c.members) and all(
            sorted(self.c.servers(d)) == sorted(want) for d in self.c.daemon_hosts)

    def partition(self, host: str, while_cut: Callable[[], object], role: str) -> FaultRecord:
        """Cut `host` off, run `while_cut` (what must happen meanwhile), heal, wait."""
        start, wall = time.monotonic(), time.time()
        leader = self.c.leader()
        self.c.lab.link(host, up=False)
        try:
            while_cut()
        finally:
            self.c.lab.link(host, up=True)
        return self._settle(f"partition-{role}", {"targets": [host], "leader_daemon": leader},
                            start, wall)

    def slow_link(self, host: str, shape: Shape, hold: float, role: str) -> FaultRecord:
        """Make `host`'s link slow and lossy both ways (tests/slowlink.py) for `hold`
        seconds, measured meanwhile by `ping` from the client host across it; then heal
        and wait. The record carries the shape and what ping saw."""
        start, wall = time.monotonic(), time.time()
        leader = self.c.leader()
        self.c.lab.slow(host, shape)
        try:
            ping = self.c.lab.ping(self.client_host, host, count=max(int(hold / PING_EVERY), 1),
                                   interval=PING_EVERY)
        finally:
            self.c.lab.heal(host)
        return self._settle(f"slow-link-{role}", {
            "targets": [host], "leader_daemon": leader, "shape": shape.describe(),
            "ping": ping.describe(), "held_s": round(time.monotonic() - start, 3)}, start, wall)

    def _settle(self, kind: str, details: dict[str, Any], start: float, wall: float,
                ) -> FaultRecord:
        """After a fault's end: steady (every member a healthy voter, every servers file
        full), then a write acknowledged after that."""
        ended = time.monotonic()
        deadline = ended + 120
        while not self.steady():
            assert time.monotonic() < deadline, f"not steady 120 s after {kind} ended"
            assert not self.c.died(), self.c.died()
            time.sleep(0.3)
        steady = time.monotonic()
        resumed = self.wait_resumed(steady, 60)
        rec = FaultRecord(kind, details, start, ended, steady, wall, wall + (steady - start),
                          resumed)
        self.faults.append(rec)
        return rec

    def role(self) -> str:
        r = self.c.etcdctl(self.follow, "role", "get", SOAK_USER)
        return r.stdout if r.returncode == 0 else f"ERROR {r.stderr}"

    def read(self, member: str | None = None) -> dict[str, checker.Stored]:
        """The keys under the prefix: linearizable, or one member's own copy."""
        args = ["get", SOAK_PREFIX, "--prefix", "-w", "json"]
        if member is not None:
            args.append("--consistency=s")
        r = self.c.etcdctl(self.follow, *args, endpoints=[member] if member else None)
        assert r.returncode == 0, r.stderr[-1000:]
        out = {}
        for kv in json.loads(r.stdout).get("kvs", []):
            key = base64.b64decode(kv["key"]).decode()
            out[key] = checker.Stored(base64.b64decode(kv.get("value", "")).decode(),
                                      int(kv["mod_revision"]), int(kv["create_revision"]),
                                      int(kv["version"]))
        return out

    def finish(self) -> LabReport:
        terminate(self.workload, 30)
        history = read_history(self.history)
        stored = self.read()
        final = [f"{m}'s copy of {SOAK_PREFIX} differs" for m in self.c.members
                 if self.read(m) != stored]
        if self.role() != self._role_before:
            final.append(f"role {SOAK_USER} changed: {self._role_before!r} -> {self.role()!r}")
        errors = {}
        for d in self.c.daemon_hosts:  # a fault of its own node explains more
            windows = [checker.Window((own_node(f.kind), f.kind) if d in f.details["targets"]
                                      else (f.kind,), f.wall_start, f.wall_steady)
                       for f in self.faults]
            lines = self.c.log_path(d).read_text().splitlines()[self._marks[d]:]
            errors[d] = checker.check_log(lines, windows)
        acks = figures.ack_times(history)
        report = LabReport(self.faults, checker.check_writes(history, stored),
                           checker.check_order(history, stored), errors, final)
        report.figures = {"operations": figures.counts(history),
                          "faults": figures.fault_rows(self.faults, acks)}
        return report

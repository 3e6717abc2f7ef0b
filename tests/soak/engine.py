"""The soak engine: a workload running, a list of faults, steady after each, a verdict.

    with Soak(cluster, SoakOptions(seed=1)) as soak:
        soak.start()                 # cert, RBAC snapshot, workload, quiet baseline
        soak.run([Kill("leader"), Hang("follower"), Swap(under=Wipe())])
        report = soak.finish()       # stop the workload, check, figures
    assert report.problems() == []

The cluster must run with `soak_extra()` in its config (the servers file the
clients follow and the `[[users]]` user they write as). After every fault the
engine polls (every POLL s) until the cluster is steady again and a write
was acknowledged after that; STEADY_TIMEOUT without it is a failure of the
run, recorded with what was last seen, and no further fault is injected.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from ckeetcd.support.files import write_private
from tests.harness import Cluster, ckecli, terminate
from tests.soak import checker, figures
from tests.soak.disk import Disks
from tests.soak.figures import FaultRecord
from tests.soak.history import OK, HistoryTail, read_history
from tests.soak.nemesis import Fault, FaultError, World
from tests.soak.probe import Probe
from tests.soak.workload import WorkloadSpec, parse_servers

ROOT = Path(__file__).resolve().parents[2]
SOAK_USER, SOAK_PREFIX = "soak", "/soak/"
POLL = 0.05


def soak_extra(root: Path, etcd_binary: str = "") -> str:
    """Config sections a soak cluster needs: the servers file and the soak user (and
    `[etcd] binary` when given: the soak can run any etcd)."""
    etcd = f'[etcd]\nbinary = "{etcd_binary}"\n\n' if etcd_binary else ""
    return (f'{etcd}[apiserver]\netcd_servers_file = "{root / "etcd-servers"}"\n\n'
            f'[[users]]\nname = "{SOAK_USER}"\nprefix = "{SOAK_PREFIX}"\n')


@dataclass(frozen=True)
class SoakOptions:
    seed: int = 1
    writers: int = 4
    readers: int = 2
    deadline: float = 0.5        # per client request
    quiet: float = 5.0           # workload alone before the first fault: the baseline
    gap: float = 0.5             # workload alone between faults
    steady_timeout: float = 120.0
    prune_archives: bool = True  # delete removed members' archived data dirs after each fault
    binaries: tuple[str, ...] = ()  # etcd binaries a rolling change may flip between


class SoakFailure(Exception):
    pass


@dataclass
class Report:
    seed: int
    faults: list[FaultRecord]
    failures: list[str]
    writes: checker.WriteVerdict
    order: checker.OrderVerdict
    log: checker.LogVerdict
    rbac_diff: list[str]
    final: list[str]            # final-state problems (members, copies, processes)
    diverged: list[str] = field(default_factory=list)  # members' copies differed after a fault
    figures: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        return [*self.failures, *self.writes.violations, *self.order.violations,
                *(f"members diverged {d}" for d in self.diverged),
                *(f"unexplained daemon error: {e}" for e in self.log.unexplained),
                *(f"RBAC changed: {d}" for d in self.rbac_diff), *self.final]

    def summary(self) -> dict[str, Any]:
        w, o = self.writes, self.order
        return {
            "seed": self.seed,
            "faults": len(self.faults),
            "operations": self.figures.get("operations"),
            "acknowledged_puts": w.acked,
            "lost": len(w.lost) + len(w.wrong_value),
            "rolled_back_by_restores": len(w.rolled_back),
            "acknowledged_with_wrong_revision": len(w.wrong_revision),
            "member_divergences": len(self.diverged),
            "definite_failures_present": len(w.failed_present),
            "indeterminate_puts": {"total": w.indeterminate, "present": w.indeterminate_present,
                                   "absent": w.indeterminate - w.indeterminate_present},
            "stale_reads": o.stale_reads,
            "read_count_mismatches": len(o.count_mismatches),
            "reads_checked": o.reads,
            "daemon_errors": self.log.by_event(),
            "unexplained_daemon_errors": len(self.log.unexplained),
            "quorum_in_doubt_warnings": len(self.log.doubts),
            "rbac_intact": not self.rbac_diff,
            "problems": self.problems(),
        }

    def text(self) -> str:
        s = self.summary()
        ops = s["operations"] or {}
        lines = [
            f"soak seed {self.seed}: {len(self.faults)} faults, etcd "
            f"{self.figures.get('etcd_versions')}",
            f"puts {ops.get('put')}, reads {ops.get('read')}",
            f"lost {s['lost']}, rolled back by restores {s['rolled_back_by_restores']}, "
            f"stale reads {s['stale_reads']}, reads not matching the store "
            f"{s['read_count_mismatches']}, wrong revisions acknowledged "
            f"{s['acknowledged_with_wrong_revision']}, member divergences "
            f"{s['member_divergences']}, definite failures present "
            f"{s['definite_failures_present']}, indeterminate {s['indeterminate_puts']}",
            f"quiet baseline: {self.figures.get('quiet')}",
            figures.table(self.figures.get("per_fault", {})),
            f"daemon error events: {s['daemon_errors']}, quorum_in_doubt warnings: "
            f"{s['quorum_in_doubt_warnings']}",
            f"problems: {s['problems'] or 'none'}",
        ]
        return "\n".join(lines)


class Soak:
    def __init__(self, cluster: Cluster, options: SoakOptions,
                 daemon_env: dict[str, str] | None = None, disks: Disks | None = None,
                 ) -> None:
        self.cluster = cluster
        self.options = options
        self.dir = cluster.root / "soak"
        self.dir.mkdir(exist_ok=True)
        self.history_path = self.dir / "history.jsonl"
        tls = cluster.root_tls()
        self.probe = Probe(Path(tls.ca), Path(tls.cert), Path(tls.key))
        self.world = World(cluster, self.probe, cluster.live_names(),
                           random.Random(options.seed), daemon_env, disks, options.binaries)
        self.faults: list[FaultRecord] = []
        self.failures: list[str] = []
        self.diverged: list[str] = []  # members whose copy differs (checked after each fault)
        self.workload: subprocess.Popen[bytes] | None = None
        self._tail = HistoryTail(self.history_path)
        self._last_ack = 0.0
        self._rbac_before: dict[str, str] = {}
        self._quiet: tuple[float, float] = (0.0, 0.0)
        self._log_start = cluster.mark()
        self._failed_rollbacks: list[dict[str, float]] = []  # of faults that then failed

    def __enter__(self) -> Soak:
        return self

    def __exit__(self, *exc: object) -> None:
        terminate(self.workload, 30)
        self.probe.close()

    # ---- set-up --------------------------------------------------------------
    def start(self) -> None:
        """Issue the soak user's certificate, snapshot RBAC, start the clients."""
        c = self.cluster
        if c.config.apiserver.etcd_servers_file is None:
            raise SoakFailure("the cluster's config lacks soak_extra() (no servers file)")
        self.wait_steady(self.options.steady_timeout)
        r = ckecli(c.config_path, "issue", "-ttl=24h", "-output=json", SOAK_USER)
        if r.returncode != 0:
            raise SoakFailure(f"ckecli etcd issue {SOAK_USER} failed: {r.stderr}")
        bundle = json.loads(r.stdout)
        certs = self.dir / "certs"
        certs.mkdir(mode=0o700, exist_ok=True)
        (certs / "ca.crt").write_text(bundle["ca_certificate"])
        (certs / f"{SOAK_USER}.crt").write_text(bundle["certificate"])
        key = certs / f"{SOAK_USER}.key"
        write_private(key, bundle["private_key"].encode())  # 0600 from its first byte
        self._rbac_before = self.rbac()
        if f"{SOAK_PREFIX}" not in self._rbac_before.get(f"role {SOAK_USER}", ""):
            raise SoakFailure(f"role {SOAK_USER} lacks {SOAK_PREFIX}: {self._rbac_before}")
        spec = WorkloadSpec(
            servers_file=str(c.config.apiserver.etcd_servers_file), ca=str(certs / "ca.crt"),
            cert=str(certs / f"{SOAK_USER}.crt"), key=str(key), prefix=SOAK_PREFIX,
            history=str(self.history_path), run_id=f"seed{self.options.seed}",
            writers=self.options.writers, readers=self.options.readers,
            deadline=self.options.deadline)
        spec_path = spec.write(self.dir / "workload.json")
        with open(self.dir / "workload.log", "ab") as log:
            self.workload = subprocess.Popen(
                [sys.executable, "-m", "tests.soak.workload", str(spec_path)], cwd=ROOT,
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        t0 = time.monotonic()
        self.wait_resumed(t0, 60)
        quiet_start = time.monotonic()
        time.sleep(self.options.quiet)  # the baseline: the workload alone
        self._quiet = (quiet_start, time.monotonic())

    # ---- running -------------------------------------------------------------
    def run(self, faults: list[Fault], deadline: float | None = None) -> None:
        """Inject each fault in turn; stop early at `deadline` (monotonic) or a failure."""
        for f in faults:
            if self.failures or (deadline is not None and time.monotonic() > deadline):
                return
            self.step(f)

    def step(self, f: Fault) -> FaultRecord | None:
        time.sleep(self.options.gap)  # the workload alone for a moment: stalls stay apart
        details: dict[str, Any] = {"leader": self.world.leader()}
        start, wall = time.monotonic(), time.time()
        try:
            details.update(f.begin(self.world))
            if f.hold:
                time.sleep(f.hold)  # the fault's own duration (a hang)
            f.end(self.world)
            ended = time.monotonic()
            details.update(f.after)
            steady = self.wait_steady(self.options.steady_timeout, f.pending)
            resumed = self.wait_resumed(steady, self.options.steady_timeout)
        except (FaultError, SoakFailure) as e:
            self.failures.append(f"{f.kind} at {start:.3f} ({details}): {e}")
            self._failed_rollbacks += f.after.get("rollbacks", [])  # what it did drop
            return None
        rec = FaultRecord(f.kind, details, start, ended, steady, wall,
                          wall + (steady - start), resumed)
        self.faults.append(rec)
        diverged = self.divergence()
        if diverged:
            self.diverged.append(f"after {f.kind} at {start:.3f} ({details}): {diverged}")
        if self.options.prune_archives:
            self.prune_archives()
        return rec

    def unsteady(self) -> str | None:
        """Why the cluster is not steady now (None: it is)."""
        w, c = self.world, self.cluster
        died = c.daemon_died()
        if died:
            raise SoakFailure(died)
        urls = {n: w.url(n) for n in w.names}
        members = next((m for u in urls.values() if (m := self.probe.members(u)) is not None),
                       None)
        if members is None:
            return "no member list (no quorum?)"
        peers = {m.peer_url for m in members}
        if peers != {w.peer_url(n) for n in w.names}:
            return f"member list {sorted(m.name or m.peer_url for m in members)} != {w.names}"
        if any(m.learner for m in members):
            return f"learner {[m.name for m in members if m.learner]}"
        leaders = set()
        for n, u in urls.items():
            st = self.probe.status(u)
            if st is None:
                return f"{n} does not answer Status"
            if st.errors:
                return f"{n}: {st.errors}"
            leaders.add(st.leader)
        if len(leaders) != 1 or 0 in leaders:
            return f"members disagree on the leader: {leaders}"
        path = c.config.apiserver.etcd_servers_file
        listed = parse_servers(path.read_text()) if path and path.exists() else []
        if set(listed) != set(urls.values()):
            return f"servers file lists {listed}"
        return None

    def divergence(self) -> str | None:
        """Whether every member holds the same key space: etcd's HashKV of each, at the
        lowest revision any of them has (what etcd's own corruption check compares)."""
        urls = {n: self.world.url(n) for n in self.world.names}
        revs = {n: st.revision for n, u in urls.items() if (st := self.probe.status(u))}
        if len(revs) != len(urls):
            return None  # a member stopped answering: the next steady wait will say so
        at = min(revs.values())
        hashes = {n: self.probe.hash_kv(u, at) for n, u in urls.items()}
        if len(set(hashes.values())) == 1:
            return None
        return f"HashKV at revision {at} differs: {hashes} (revisions {revs})"

    def wait_steady(self, timeout: float,
                    pending: Callable[[World], str | None] | None = None) -> float:
        """When the cluster was steady (and the fault's own `pending` outcome there)."""
        deadline = time.monotonic() + timeout
        why: str | None = "not probed"
        while time.monotonic() < deadline:
            why = (pending(self.world) if pending else None) or self.unsteady()
            if why is None:
                return time.monotonic()
            time.sleep(POLL)
        raise SoakFailure(f"not steady after {timeout:g}s: {why}")

    def wait_resumed(self, after: float, timeout: float) -> float:
        """The end time of the first acknowledged put after `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self._tail.new():
                if r.kind == "put" and r.outcome == OK and r.end > after:
                    self._last_ack = max(self._last_ack, r.end)
            if self._last_ack > after:
                return self._last_ack
            if self.workload is not None and self.workload.poll() is not None:
                raise SoakFailure(f"the workload exited with {self.workload.returncode}")
            time.sleep(POLL)
        raise SoakFailure(f"no write acknowledged within {timeout:g}s after steady")

    def prune_archives(self) -> None:
        """Delete the archived data of removed members and the data a restore moved aside
        (60-120 MB each; the daemon keeps them, the operator decides): a member's small
        disk would fill with them after a few restores."""
        members = self.cluster.state_dir / "members"
        for pattern in ("*/data.removed-*", "*/data.before-restore-*"):
            for d in members.glob(pattern):
                shutil.rmtree(d, ignore_errors=True)

    # ---- the end ---------------------------------------------------------------
    def rbac(self) -> dict[str, str]:
        """`etcdctl user get` / `role get` of every user and role, as text."""
        c = self.cluster
        eps = ",".join(self.world.url(n) for n in self.world.names)
        out: dict[str, str] = {}
        for what in ("user", "role"):
            r = c.etcdctl(what, "list", endpoints=eps)
            if r.returncode != 0:
                raise SoakFailure(f"etcdctl {what} list: {r.stderr}")
            for name in r.stdout.split():
                g = c.etcdctl(what, "get", name, endpoints=eps)
                out[f"{what} {name}"] = g.stdout if g.returncode == 0 else f"ERROR {g.stderr}"
        return out

    def final_store(self) -> tuple[dict[str, checker.Stored], list[str]]:
        """The keys under the prefix (linearizable), and whether every member holds the same."""
        problems: list[str] = []
        urls = [self.world.url(n) for n in self.world.names]
        _, kvs = self.probe.read_prefix(urls[0], SOAK_PREFIX)
        want = {kv.key: (kv.value, kv.mod_revision) for kv in kvs}
        for n, u in zip(self.world.names, urls, strict=True):
            deadline = time.monotonic() + 30
            while True:
                error = ""
                try:
                    _, copy = self.probe.read_prefix(u, SOAK_PREFIX, serializable=True)
                    got = {kv.key: (kv.value, kv.mod_revision) for kv in copy}
                except grpc.RpcError as e:
                    got, error = {}, f"{e.code().name}: {e.details()}"
                if got == want:
                    break
                if time.monotonic() > deadline:
                    diff = len(set(got.items()) ^ set(want.items()))
                    problems.append(f"{n} could not be read: {error}" if error else
                                    f"{n}'s copy of {SOAK_PREFIX} differs ({diff} entries)")
                    break
                time.sleep(POLL)
        return ({kv.key: checker.Stored(kv.value, kv.mod_revision, kv.create_revision,
                                        kv.version) for kv in kvs}, problems)

    def leftovers(self) -> list[str]:
        """etcd processes still running for members that are no longer desired."""
        members = self.cluster.state_dir / "members"
        return [f"{d.name}: etcd still running (pid {p.pid}) though not desired"
                for d in sorted(members.iterdir()) if d.is_dir() and d.name not in self.world.names
                and (p := self.world.proc(d.name)) is not None]

    def finish(self) -> Report:
        final: list[str] = []
        if not self.failures:
            try:
                self.wait_steady(self.options.steady_timeout)
            except SoakFailure as e:
                self.failures.append(f"final: {e}")
        terminate(self.workload, 30)
        history = read_history(self.history_path)
        try:
            stored, copies = self.final_store()
        except grpc.RpcError as e:
            stored, copies = {}, [f"final read failed: {e}"]
        final += copies
        final += self.leftovers()
        try:
            rbac_diff = checker.check_rbac(self._rbac_before, self.rbac())
        except (SoakFailure, subprocess.TimeoutExpired) as e:
            rbac_diff = [f"users and roles could not be read at the end: {e}"]
        windows = [checker.Window((f.kind, f.details.get("under", {}).get("kind", "")),
                                  f.wall_start, f.wall_steady, f.details.get("leaving", ""),
                                  tuple(f.details.get("under", {}).get("targets", ())))
                   for f in self.faults]
        rollbacks = tuple(checker.Rollback(int(rb["revision"]), float(rb["end"]))
                          for rb in [*(rb for f in self.faults
                                       for rb in f.details.get("rollbacks", ())),
                                     *self._failed_rollbacks])
        lines = self.cluster.daemon_log.read_text().splitlines()[self._log_start:]
        report = Report(self.options.seed, self.faults, self.failures,
                        checker.check_writes(history, stored, rollbacks),
                        checker.check_order(history, stored, rollbacks),
                        checker.check_log(lines, windows), rbac_diff, final, self.diverged)
        acks = figures.ack_times(history)
        q0, q1 = self._quiet
        report.figures = {
            "etcd_versions": sorted({st.version for n in self.world.names
                                     if (st := self.probe.status(self.world.url(n)))}),
            "operations": figures.counts(history),
            "quiet": {"seconds": round(q1 - q0, 1),
                      "longest_write_gap_s": round(figures.longest_gap(acks, q0, q1), 3),
                      "put_latency": figures.latency(history, "put", q0, q1)},
            "put_latency_overall": figures.latency(history, "put"),
            "per_fault": figures.per_kind(self.faults, acks),
            "faults": figures.fault_rows(self.faults, acks),
        }
        return report

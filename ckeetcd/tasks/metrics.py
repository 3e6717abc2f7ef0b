"""Prometheus metrics: one private registry per daemon process, served on request.

Everything is exported from `METRICS.registry` (a private CollectorRegistry:
no process or platform collectors, nothing another library registers). The
daemon updates it from each observation (MetricsTask.offer), the runner from
each op (`op_finished`), the loop from each cycle (`cycle_finished`), and the
backup code may call `record_backup_success()`. The listener is prometheus_client's
own WSGI server in a thread of its own, started only when `[metrics] address`
is set, and moved when a reload changes it.

Names (all prefixed `ckeetcd_`; docs/operator-guide.md lists them with labels):
members, has_quorum, leader, leader_changes_total, member_healthy,
db_size_bytes, db_size_in_use_bytes, alarms, ops_total, op_duration_seconds,
cycles_total, cycle_duration_seconds, phase, paused, cert_expiry_seconds,
member_cert_expiry_timestamp_seconds, ca_expiry_timestamp_seconds,
daemon_cert_expiry_timestamp_seconds, last_backup_success_timestamp_seconds, daemon_role,
member_version_info, cluster_version_info, member_known_bad_release, auth_held.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_wsgi_server

from ckeetcd.core.config import Config
from ckeetcd.core.etcdversions import known_bad, parse_version
from ckeetcd.core.kinds import Phase, Role
from ckeetcd.core.model import Desired, Observed
from ckeetcd.pki import CLIENT, PEER, ca_paths
from ckeetcd.pki.expiry import not_after_of
from ckeetcd.tasks.daemoncert import daemon_tls

MEMBER_STATES = ("healthy", "unhealthy", "learner")
ALARMS = ("NOSPACE", "CORRUPT")
PHASES = tuple(Phase)
ROLES = tuple(Role)
OP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
CYCLE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.members = Gauge("ckeetcd_members", "Members in etcd's member list, by state: "
                             "healthy or unhealthy voters, learners", ["state"], registry=r)
        self.has_quorum = Gauge("ckeetcd_has_quorum",
                                "1 when healthy voters reach the quorum of the voters",
                                registry=r)
        self.leader = Gauge("ckeetcd_leader", "1 for the member the healthy members "
                            "call their leader", ["member"], registry=r)
        self.leader_changes = Counter("ckeetcd_leader_changes", "Leader elections the "
                                      "daemon has seen (a new raft term with a leader; "
                                      "the same member may win again)", registry=r)
        self.member_healthy = Gauge("ckeetcd_member_healthy", "1 when the member answers "
                                    "Status with a leader and no error", ["member"],
                                    registry=r)
        self.db_size = Gauge("ckeetcd_db_size_bytes", "Size of the member's backend "
                             "database file", ["member"], registry=r)
        self.db_in_use = Gauge("ckeetcd_db_size_in_use_bytes", "Bytes of the member's "
                               "database in use (the rest is free pages)", ["member"],
                               registry=r)
        self.alarms = Gauge("ckeetcd_alarms", "Active etcd alarms of each type (members "
                            "that raised it)", ["alarm"], registry=r)
        self.ops = Counter("ckeetcd_ops", "Ops run, by op name and outcome (ok, error)",
                           ["op", "outcome"], registry=r)
        self.op_duration = Histogram("ckeetcd_op_duration_seconds", "How long ops took",
                                     ["op"], buckets=OP_BUCKETS, registry=r)
        self.cycles = Counter("ckeetcd_cycles", "Cycles (decide, run, log), by phase",
                              ["phase"], registry=r)
        self.cycle_duration = Histogram("ckeetcd_cycle_duration_seconds", "How long a "
                                        "cycle took: observe, decide and run its ops",
                                        buckets=CYCLE_BUCKETS, registry=r)
        self.phase = Gauge("ckeetcd_phase", "1 for the phase of the last decision",
                           ["phase"], registry=r)
        self.role = Gauge("ckeetcd_daemon_role", "1 for this daemon's role in the last "
                          "cycle (single, leader, follower, bootstrapper)", ["role"],
                          registry=r)
        self.paused = Gauge("ckeetcd_paused", "1 while automatic changes are paused "
                            "(config or ckeetcd pause)", registry=r)
        self.cert_expiry = Gauge("ckeetcd_cert_expiry_seconds", "Seconds until the "
                                 "earliest member server or peer certificate expires "
                                 "(NaN until known)", registry=r)
        self.member_cert_expiry = Gauge("ckeetcd_member_cert_expiry_timestamp_seconds",
                                        "When the member's server or peer certificate "
                                        "expires first (Unix time)", ["member"], registry=r)
        self.last_backup = Gauge("ckeetcd_last_backup_success_timestamp_seconds",
                                 "When the newest verified backup was made (Unix time; "
                                 "0 = none known)", registry=r)
        self.member_version = Gauge("ckeetcd_member_version_info", "1 per member, labelled "
                                    "with the etcd version its Status reports",
                                    ["member", "version"], registry=r)
        self.cluster_version = Gauge("ckeetcd_cluster_version_info", "1, labelled with "
                                     "etcd's cluster version (/version etcdcluster)",
                                     ["version"], registry=r)
        self.known_bad = Gauge("ckeetcd_member_known_bad_release", "1 when the member runs "
                               "a known-bad etcd release (docs/operator-guide.md), else 0",
                               ["member", "version"], registry=r)
        self.auth_held = Gauge("ckeetcd_auth_held", "1 while members run more than one "
                               "etcd minor, so no auth change is written", registry=r)
        self.ca_expiry = Gauge("ckeetcd_ca_expiry_timestamp_seconds", "When the cluster's "
                               "CA of each role (client, peer) expires (Unix time; NaN: no "
                               "such CA on this host)", ["role"], registry=r)
        self.daemon_cert_expiry = Gauge("ckeetcd_daemon_cert_expiry_timestamp_seconds",
                                        "When this daemon's root client certificate "
                                        "expires (Unix time; NaN until it exists)", registry=r)
        self._lock = threading.Lock()
        self._earliest_expiry = math.nan
        self._backup_recorded = 0.0
        self.backup_scan: Callable[[], float | None] | None = None
        self._term = 0
        self.cert_expiry.set_function(lambda: self._earliest_expiry - time.time())
        self.last_backup.set_function(self._last_backup)
        for state in MEMBER_STATES:
            self.members.labels(state)
        for alarm in ALARMS:
            self.alarms.labels(alarm)

    # ---- feeds -----------------------------------------------------------------
    def observe(self, observed: Observed, desired: Desired | None = None) -> None:
        """Gauges from one observation (called for every observation: cheap)."""
        members = observed.members or ()
        voters = observed.voters()
        healthy = sum(1 for m in voters if observed.is_healthy(m))
        leader = observed.leader_id()
        term = max((h.raft_term for h in observed.health.values() if h.healthy), default=0)
        if leader and term > self._term:
            if self._term:
                self.leader_changes.inc()
            self._term = term
        names = {m.id: m.name or f"{m.id:x}" for m in members}
        with self._lock:
            self.members.labels("healthy").set(healthy)
            self.members.labels("unhealthy").set(len(voters) - healthy)
            self.members.labels("learner").set(len(observed.learners()))
            self.has_quorum.set(1 if observed.has_quorum() else 0)
            for g in (self.leader, self.member_healthy, self.db_size, self.db_in_use,
                      self.member_cert_expiry, self.member_version, self.known_bad):
                g.clear()
            for name, version in observed.member_versions():
                self.member_version.labels(name, version).set(1)
                self.known_bad.labels(name, version).set(
                    1 if known_bad(parse_version(version)) else 0)
            if observed.cluster_version:
                self.cluster_version.clear()
                self.cluster_version.labels(observed.cluster_version).set(1)
            self.auth_held.set(1 if observed.auth_hold() else 0)
            for m in members:
                name = names[m.id]
                self.leader.labels(name).set(1 if m.id == leader else 0)
                self.member_healthy.labels(name).set(1 if observed.is_healthy(m) else 0)
                h = observed.health.get(m.id)
                if h is not None and h.healthy:
                    self.db_size.labels(name).set(h.db_size)
                    self.db_in_use.labels(name).set(h.db_size_in_use)
            for alarm in ALARMS:
                self.alarms.labels(alarm).set(sum(1 for _, a in observed.alarms if a == alarm))
            for name, t in observed.cert_expiry.items():
                self.member_cert_expiry.labels(name).set(t)
            if observed.cert_expiry:
                self._earliest_expiry = min(observed.cert_expiry.values())
            paused = observed.paused or (desired is not None and desired.paused)
            self.paused.set(1 if paused else 0)

    def watch_trust(self, config: Callable[[], Config]) -> None:
        """CA and daemon certificate expiry, read from the files at each scrape (a
        renewed certificate shows at once, and nothing is read between scrapes)."""
        def reading(path_of: Callable[[Config], Path]) -> Callable[[], float]:
            def read() -> float:
                t = not_after_of(path_of(config()))
                return t.timestamp() if t is not None else math.nan
            return read
        def ca_cert(role: str) -> Callable[[Config], Path]:
            return lambda c: ca_paths(c.cluster.pki_dir, role)[0]
        for role in (CLIENT, PEER):
            self.ca_expiry.labels(role).set_function(reading(ca_cert(role)))
        self.daemon_cert_expiry.set_function(reading(lambda c: daemon_tls(c).cert))

    def op_finished(self, op: str, outcome: str, duration: float) -> None:
        self.ops.labels(op, outcome).inc()
        self.op_duration.labels(op).observe(duration)

    def cycle_finished(self, phase: str, duration: float, role: str = "") -> None:
        self.cycles.labels(phase).inc()
        self.cycle_duration.observe(duration)
        with self._lock:
            self.phase.clear()
            for p in {*PHASES, phase}:
                self.phase.labels(p).set(1 if p == phase else 0)
            if role:
                for r in {*ROLES, role}:
                    self.role.labels(r).set(1 if r == role else 0)

    def record_backup_success(self, when: float | None = None) -> None:
        self._backup_recorded = max(self._backup_recorded, time.time() if when is None
                                    else when)

    def _last_backup(self) -> float:
        scanned = None
        if self.backup_scan is not None:
            with contextlib.suppress(OSError):
                scanned = self.backup_scan()
        return max(self._backup_recorded, scanned or 0.0)


METRICS = Metrics()


def record_backup_success(when: float | None = None) -> None:
    """Tell the metrics a verified backup was just made (or was made at `when`)."""
    METRICS.record_backup_success(when)


class MetricsTask:
    """Side task: update the gauges from every observation; serve /metrics when asked to.

    The listener (prometheus_client's WSGI server) runs in its own thread, so a
    scrape never waits for the control loop, and it keeps answering (with the
    last values) even when the loop is stuck. A reload that changes
    `[metrics] address` moves it; an empty address stops it.
    """

    name = "metrics"

    def __init__(self, config: Config, log: Any, metrics: Metrics = METRICS,
                 backup_scan: Callable[[Config], float | None] | None = None) -> None:
        self.config = config
        self.log = log
        self.metrics = metrics
        self._scan = backup_scan
        if backup_scan is not None:
            metrics.backup_scan = lambda: backup_scan(self.config)
        metrics.watch_trust(lambda: self.config)
        self._changed = asyncio.Event()
        self._server: Any = None
        self._serving: tuple[str, int] | None = None

    def offer(self, config: Config, desired: Desired, observed: Observed) -> None:
        if config.metrics != self.config.metrics:
            self._changed.set()
        self.config = config
        self.metrics.observe(observed, desired)

    async def run(self) -> None:
        try:
            while True:
                want = self.config.metrics.host_port
                if want != self._serving:
                    await self._stop()
                    if want is not None:
                        self._start(*want)
                self._changed.clear()
                await self._changed.wait()
        finally:
            await self._stop()

    def _start(self, host: str, port: int) -> None:
        server, _ = start_wsgi_server(port, addr=host, registry=self.metrics.registry)
        self._server, self._serving = server, (host, port)
        bound = server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.log.info("metrics_listening", address=f"{shown}:{bound}",
                      url=f"http://{shown}:{bound}/metrics")

    async def _stop(self) -> None:
        server, self._server, self._serving = self._server, None, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
            self.log.info("metrics_stopped")

"""Background tasks beside the control loop (endpoints publishing, backups, ...).

Each task is fed every observation through `offer()` (which must not block:
store the latest snapshot, set an event) and runs its own `run()` coroutine.
The daemon supervises them: a task that raises is logged and restarted with
backoff; none of them can stall the etcd loop.

Tasks that change something outside this daemon (the Kubernetes endpoints,
scheduled backups) run under `LeaderOnly`: with several daemons only the
leader publishes and backs up, so followers never fight it over the same
objects or fill every node with copies of the same snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any, Protocol

from ckeetcd.coordination.election import daemon_id
from ckeetcd.core.config import Config
from ckeetcd.core.model import Desired, Observed
from ckeetcd.pki.catransfer import PublicCA
from ckeetcd.procedures.quorumwatch import QuorumWatch
from ckeetcd.support.polling import Backoff, Poll
from ckeetcd.tasks.alerts import AlertWatch
from ckeetcd.tasks.backup import ScheduledBackups, backup_time, default_dir, list_backups
from ckeetcd.tasks.daemoncert import DaemonCertRenewal, RequestSigner
from ckeetcd.tasks.metrics import MetricsTask
from ckeetcd.tasks.versionwatch import VersionWatch


class Supervised(Protocol):
    """Anything `supervise` keeps running: a side task, the election."""

    name: str

    async def run(self) -> None: ...


class SideTask(Supervised, Protocol):
    def offer(self, config: Config, desired: Desired, observed: Observed) -> None: ...


def build_side_tasks(config: Config, deps: dict[str, Any]) -> list[SideTask]:
    """The tasks this config asks for. `deps` carries the daemon's edges (pool, log, ...).

    `deps["may_act"]` says whether this daemon may change things now (always,
    without an election; while it holds the lease, with one).
    """
    log, may_act = deps["log"], deps.get("may_act", lambda: True)
    tasks: list[SideTask] = [DaemonCertRenewal(config, deps["ca"], deps["pool"],
                                               daemon_id(config), log, may_act=may_act)]
    if config.election and not isinstance(deps["ca"], PublicCA):
        tasks.append(LeaderOnly("daemon-cert-signer",
                                lambda c: RequestSigner(c, deps["ca"], deps["pool"], log),
                                may_act, log))
    tasks.append(LeaderOnly("kube-endpoints", lambda c: _endpoints_task(c, log), may_act, log,
                            wanted=lambda c: c.kubernetes is not None))
    # idle while interval = 0
    tasks.append(LeaderOnly("scheduled-backups",
                            lambda c: ScheduledBackups(c, deps["pool"], log), may_act, log))
    tasks.append(QuorumWatch(deps["log"]))  # logs quorum_lost / quorum_restored
    tasks.append(AlertWatch(deps["log"]))  # logs alarm_raised/cleared, paused/resumed
    tasks.append(VersionWatch(deps["log"]))  # etcd versions, known-bad releases, auth hold
    tasks.append(MetricsTask(config, deps["log"], backup_scan=newest_backup))
    return tasks


def _endpoints_task(config: Config, log: Any) -> SideTask:
    from ckeetcd.kube.endpoints import EndpointsTask  # lazily: kubernetes_asyncio is heavy

    return EndpointsTask(config, log)


def newest_backup(config: Config) -> float | None:
    """When the newest verified backup in the backup folder was made (for the metrics)."""
    stamps = [t for t in map(backup_time, list_backups(default_dir(config))) if t]
    return stamps[-1].timestamp() if stamps else None


class LeaderOnly:
    """Runs a fresh instance of a task while this daemon may act and the config wants it.

    A new instance per term: nothing a task believed while it last led (what
    it published, when it last backed up) is trusted after another daemon led.
    `wanted` follows reloads: a `[kubernetes]` section added to a running
    daemon's config starts the endpoints task, one removed stops it.
    """

    def __init__(self, name: str, factory: Callable[[Config], SideTask],
                 may_act: Callable[[], bool], log: Any,
                 wanted: Callable[[Config], bool] = lambda config: True) -> None:
        self.name = name
        self.factory = factory
        self.may_act = may_act
        self.wanted = wanted
        self.log = log
        self.inner: SideTask | None = None
        self._acting = False
        self._latest: tuple[Config, Desired, Observed] | None = None
        self._changed = asyncio.Event()

    def offer(self, config: Config, desired: Desired, observed: Observed) -> None:
        self._latest = (config, desired, observed)
        acting = self.may_act() and self.wanted(config)
        if acting != self._acting:
            self._acting = acting
            self._changed.set()
        if self.inner is not None and acting:
            self.inner.offer(config, desired, observed)

    async def run(self) -> None:
        running: asyncio.Task[None] | None = None
        try:
            while True:
                await self._changed.wait()
                self._changed.clear()
                if self._acting and running is None and self._latest is not None:
                    config = self._latest[0]
                    self.inner = self.factory(config)
                    self.inner.offer(*self._latest)
                    running = asyncio.create_task(supervise(self.inner, self.log),
                                                  name=self.name)
                    self.log.info("side_task_started", task=self.name)
                elif not self._acting and running is not None:
                    self.inner = None
                    await stop_all([running])
                    running = None
                    reason = "not leader" if not self.may_act() else "not configured"
                    self.log.info("side_task_stopped", task=self.name, reason=reason)
        finally:
            if running is not None:
                await stop_all([running])


async def supervise(task: Supervised, log: Any, max_backoff: float = 30.0) -> None:
    """Run `task` forever; restart it with backoff when it fails."""
    async for _ in Poll(math.inf, Backoff(0.5, factor=2, cap=max_backoff)):
        try:
            await task.run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.error("side_task_failed", task=task.name, error=f"{type(e).__name__}: {e}")


async def stop_all(running: list[asyncio.Task[None]]) -> None:
    for t in running:
        t.cancel()
    for t in running:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t

"""Background tasks beside the control loop (endpoints publishing, backups, ...).

Each task is fed every observation through `offer()` (which must not block:
store the latest snapshot, set an event) and runs its own `run()` coroutine.
The daemon supervises them: a task that raises is logged and restarted with
backoff; none of them can stall the etcd loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from ckeetcd.alerts import AlertWatch
from ckeetcd.backup import ScheduledBackups, backup_time, default_dir, list_backups
from ckeetcd.config import Config
from ckeetcd.metrics import MetricsTask
from ckeetcd.model import Desired, Observed
from ckeetcd.restore import QuorumWatch


class SideTask(Protocol):
    name: str

    def offer(self, config: Config, desired: Desired, observed: Observed) -> None: ...

    async def run(self) -> None: ...


def build_side_tasks(config: Config, deps: dict[str, Any]) -> list[SideTask]:
    """The tasks this config asks for. `deps` carries the daemon's edges (pool, log, ...)."""
    tasks: list[SideTask] = []
    if config.kubernetes is not None:  # imported lazily: kubernetes_asyncio is heavy
        from ckeetcd.kube.endpoints import EndpointsTask

        tasks.append(EndpointsTask(config, deps["log"]))
    tasks.append(ScheduledBackups(config, deps["pool"], deps["log"]))  # idle while interval = 0
    tasks.append(QuorumWatch(deps["log"]))  # logs quorum_lost / quorum_restored
    tasks.append(AlertWatch(deps["log"]))  # logs alarm_raised/cleared, paused/resumed
    tasks.append(MetricsTask(config, deps["log"], backup_scan=newest_backup))
    return tasks


def newest_backup(config: Config) -> float | None:
    """When the newest verified backup in the backup folder was made (for the metrics)."""
    stamps = [t for t in map(backup_time, list_backups(default_dir(config))) if t]
    return stamps[-1].timestamp() if stamps else None


async def supervise(task: SideTask, log: Any, max_backoff: float = 30.0) -> None:
    """Run `task` forever; restart it with backoff when it fails."""
    backoff = 0.5
    while True:
        try:
            await task.run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.error("side_task_failed", task=task.name, error=f"{type(e).__name__}: {e}")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)


async def stop_all(running: list[asyncio.Task[None]]) -> None:
    for t in running:
        t.cancel()
    for t in running:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t

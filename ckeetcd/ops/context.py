"""What an op needs to act, and the step recorder every op uses."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ckeetcd.core.config import Config
from ckeetcd.core.model import Desired, Observed, Op
from ckeetcd.etcd import ClientPool, EtcdClient
from ckeetcd.nodes import MemberRuntime
from ckeetcd.pki import CA
from ckeetcd.support.history import History
from ckeetcd.support.startbook import StartBook

FAILPOINT_ENV = "CKEETCD_FAILPOINT"


class OpFailed(Exception):
    """A step could not do its job; the next cycle decides again."""


class Skip(Exception):
    """A step's precondition no longer holds: nothing to do."""


@dataclass
class OpContext:
    config: Config
    desired: Desired
    observed: Observed
    runtime: MemberRuntime
    pool: ClientPool
    ca: CA
    history: History
    log: Any
    cycle: int = 0
    failpoint: str = field(default_factory=lambda: os.environ.get(FAILPOINT_ENV, ""))
    # Leader election: raises unless this daemon may act for the op right now
    # (ckeetcd/coordination/election.py). Checked before every step; None = one daemon.
    fence: Callable[[Op], Awaitable[None]] | None = None
    # Restart back-off bookkeeping (ckeetcd.support.startbook): starts and exits are told
    # here. None: not kept (tests that run one op).
    starts: StartBook | None = None

    def leader_client(self, exclude: int = 0) -> EtcdClient:
        """The leader's client, else any healthy voter's (never `exclude`)."""
        obs = self.observed
        leader = obs.leader_id()
        voters = [m for m in obs.healthy_voters() if m.id != exclude and m.client_urls]
        voters.sort(key=lambda m: m.id != leader)
        if not voters:
            raise OpFailed("no healthy voter to talk to")
        return self.pool.get(voters[0].client_urls[0])

    @contextlib.asynccontextmanager
    async def step(self, op: Op, name: str, **extra: Any) -> AsyncIterator[None]:
        """Log and record one step; a Skip inside ends the step as skipped."""
        start = time.monotonic()
        base = {"op": op.kind, "step": name, "targets": op.targets(), **extra}
        self.history.record(cycle=self.cycle, event="step-begin", **base)
        outcome, error = "ok", ""
        try:
            if self.fence is not None:
                await self.fence(op)
            yield
        except Skip as e:
            outcome, error = "skipped", str(e)
        except Exception as e:
            outcome, error = "error", f"{type(e).__name__}: {e}"
            raise
        finally:
            duration = round(time.monotonic() - start, 4)
            self.history.record(cycle=self.cycle, event="step-end", outcome=outcome,
                                duration=duration, error=error, **base)
            level = self.log.warning if outcome == "error" else self.log.info
            level("op_step", outcome=outcome, duration=duration,
                  **({"error": error} if error else {}), **base)
        if self.failpoint and self.failpoint in (f"{op.kind}:{name}", "*"):
            self.log.warning("failpoint", op=op.kind, step=name)
            os.kill(os.getpid(), signal.SIGKILL)

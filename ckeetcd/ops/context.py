"""What an op needs to act; its steps are recorded by ckeetcd.ops.steps."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ckeetcd.core.config import Config
from ckeetcd.core.model import Desired, Observed, Op
from ckeetcd.etcd import ClientPool, EtcdClient
from ckeetcd.nodes import MemberRuntime
from ckeetcd.ops.steps import FAILPOINT_ENV, Skip, Step, StepRecorder
from ckeetcd.pki import CA
from ckeetcd.support.history import History
from ckeetcd.support.startbook import StartBook

__all__ = ["FAILPOINT_ENV", "OpContext", "OpFailed", "Skip", "Step"]


class OpFailed(Exception):
    """A step could not do its job; the next cycle decides again."""


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
    # The peer CA when the cluster has its own (ckeetcd.pki.Trust); None: one CA.
    peer_ca: CA | None = None

    @property
    def peer(self) -> CA:
        """The CA of the members' peer certificates."""
        return self.peer_ca if self.peer_ca is not None else self.ca

    def leader_client(self, exclude: int = 0) -> EtcdClient:
        """The leader's client, else any healthy voter's (never `exclude`)."""
        obs = self.observed
        leader = obs.leader_id()
        voters = [m for m in obs.healthy_voters() if m.id != exclude and m.client_urls]
        voters.sort(key=lambda m: m.id != leader)
        if not voters:
            raise OpFailed("no healthy voter to talk to")
        return self.pool.get(voters[0].client_urls[0])

    def steps(self, op: Op) -> StepRecorder:
        """The recorder of `op`'s steps: this cycle, the fence before every step."""
        fence = None if self.fence is None else functools.partial(self.fence, op)
        return StepRecorder(self.history, self.log, op.kind, op.targets(), cycle=self.cycle,
                            fence=fence, failpoint=self.failpoint)

    def step(self, op: Op, name: str, **extra: Any) -> contextlib.AbstractAsyncContextManager[Step]:
        """Log and record one step of `op` (ckeetcd.ops.steps); a Skip inside ends it as skipped."""
        return self.steps(op).step(name, **extra)

    async def skip(self, op: Op, name: str, reason: str, **extra: Any) -> Step:
        """Record a step of `op` that found nothing to do."""
        return await self.steps(op).skip(name, reason, **extra)

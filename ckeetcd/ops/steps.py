"""The step recorder of the ops and of the restore: every step, the same records.

A step is recorded twice in the history (`step-begin` before, `step-end`
with its outcome after: a step a crash cut short shows as begun and never
ended) and logged once as an `op_step` event. The outcome is "ok", "error"
(the exception propagates) or "skipped": the step raised `Skip` because
there was nothing to do. The `Step` the block gets says how it ended, so
the op can see a skip and stop. `CKEETCD_FAILPOINT=op:step` (or `*`) makes
the process SIGKILL itself right after such a step ended well (tests).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ckeetcd.support.history import History

FAILPOINT_ENV = "CKEETCD_FAILPOINT"


class Skip(Exception):
    """A step's precondition no longer holds: nothing to do."""


@dataclass
class Step:
    """One step; after its block, how it ended ("ok", "skipped" or "error") and why."""

    name: str
    outcome: str = "ok"
    reason: str = ""

    @property
    def skipped(self) -> bool:
        return self.outcome == "skipped"


@dataclass(frozen=True)
class StepRecorder:
    """Records the steps of one op (`op`, `targets`) in `history` and `log`.

    `cycle` is the daemon's cycle number (None outside the daemon's loop);
    `fence`, when set, runs before every step and raises when this process
    may not act now (the leader election).
    """

    history: History | None
    log: Any
    op: str
    targets: str
    cycle: int | None = None
    fence: Callable[[], Awaitable[None]] | None = None
    failpoint: str = field(default_factory=lambda: os.environ.get(FAILPOINT_ENV, ""))

    @contextlib.asynccontextmanager
    async def step(self, name: str, **extra: Any) -> AsyncIterator[Step]:
        """Record one step around the block; a Skip inside ends it as skipped."""
        start = time.monotonic()
        base = {"op": self.op, "step": name, "targets": self.targets, **extra}
        self._record(event="step-begin", **base)
        step = Step(name)
        try:
            if self.fence is not None:
                await self.fence()
            yield step
        except Skip as e:
            step.outcome, step.reason = "skipped", str(e)
        except BaseException as e:  # a cancelled step did not end well either
            step.outcome, step.reason = "error", f"{type(e).__name__}: {e}"
            raise
        finally:
            duration = round(time.monotonic() - start, 4)
            self._record(event="step-end", outcome=step.outcome, duration=duration,
                         error=step.reason, **base)
            level = self.log.warning if step.outcome == "error" else self.log.info
            level("op_step", outcome=step.outcome, duration=duration,
                  **({"error": step.reason} if step.reason else {}), **base)
        if self.failpoint and self.failpoint in (f"{self.op}:{name}", "*"):
            self.log.warning("failpoint", op=self.op, step=name)
            os.kill(os.getpid(), signal.SIGKILL)

    async def skip(self, name: str, reason: str, **extra: Any) -> Step:
        """Record a step that found nothing to do, without a block of its own."""
        async with self.step(name, **extra) as step:
            raise Skip(reason)
        return step

    def _record(self, **fields: Any) -> None:
        if self.history is not None:
            cycle = {} if self.cycle is None else {"cycle": self.cycle}
            self.history.record(**cycle, **fields)

"""Run a decision's ops in order; stop at the first failure.

A failure is not retried here: the next cycle observes again and decides
afresh, which is what makes every op safe to interrupt. Consecutive starts
(a bootstrap, restarts after a quorum loss) run side by side: each watches
its member come up (ops/start_member.py), and members of a forming cluster
only become healthy together.
"""

from __future__ import annotations

import asyncio
import time

from ckeetcd.core.electionhint import election_hint
from ckeetcd.core.kinds import STARTS
from ckeetcd.core.model import Decision, Op
from ckeetcd.ops import OPS, OpContext
from ckeetcd.tasks.metrics import METRICS


async def run_ops(ctx: OpContext, decision: Decision) -> bool:
    """True when every op finished; False at the first one (or group of starts) that failed."""
    ops = decision.ops
    i = 0
    while i < len(ops):
        j = i + 1
        if ops[i].kind in STARTS:
            while j < len(ops) and ops[j].kind in STARTS:
                j += 1
        results = await asyncio.gather(*(_run(ctx, ops, k) for k in range(i, j)))
        if not all(results):
            return False
        i = j
    return True


async def _run(ctx: OpContext, ops: tuple[Op, ...], index: int) -> bool:
    op = ops[index]
    start = time.monotonic()
    ctx.history.record(cycle=ctx.cycle, event="op-begin", op=op.kind, targets=op.targets())
    try:
        await OPS[op.kind](ctx, op)
    except Exception as e:
        duration = round(time.monotonic() - start, 4)
        error = f"{type(e).__name__}: {e}"
        hint = election_hint(ctx.observed, ops, index, _grpc_code(e))
        extra = {"hint": hint} if hint else {}
        ctx.history.record(cycle=ctx.cycle, event="op-end", op=op.kind,
                           targets=op.targets(), outcome="error", duration=duration,
                           error=error, **extra)
        ctx.log.warning("op", op=op.kind, targets=op.targets(), outcome="error",
                        duration=duration, error=error, **extra)
        METRICS.op_finished(op.kind, "error", duration)
        return False
    duration = round(time.monotonic() - start, 4)
    ctx.history.record(cycle=ctx.cycle, event="op-end", op=op.kind, targets=op.targets(),
                       outcome="ok", duration=duration)
    ctx.log.info("op", op=op.kind, targets=op.targets(), outcome="ok", duration=duration)
    METRICS.op_finished(op.kind, "ok", duration)
    return True


def _grpc_code(e: BaseException) -> str:
    """The gRPC status code name of an etcd error (TimeoutError counts as a deadline)."""
    if isinstance(e, TimeoutError):
        return "DEADLINE_EXCEEDED"
    return str(getattr(e, "code", ""))

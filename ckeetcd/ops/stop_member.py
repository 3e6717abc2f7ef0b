"""stop-member: stop etcd on its node, then (when asked) move its data aside."""

from __future__ import annotations

from ckeetcd.model import Op
from ckeetcd.ops.context import OpContext, Skip


async def run(ctx: OpContext, op: Op) -> None:
    # A leaving member that is not the leader gains nothing from etcd's ~1 s
    # graceful stop: its data is kept (moved aside) and the WAL is fsynced. A
    # leader gets SIGTERM so it hands leadership over instead of costing an
    # election timeout.
    leaving = op.detail == "archive-data"
    is_leader = op.member_id != 0 and op.member_id == ctx.observed.leader_id()
    grace = 0.0 if leaving and not is_leader else 10.0
    async with ctx.step(op, "stop-process", graceful=grace > 0):
        if not await ctx.runtime.stop(op.member, timeout=grace):
            raise Skip("not running")
    if op.detail == "archive-data":
        async with ctx.step(op, "archive-data"):
            moved = await ctx.runtime.archive_data(op.member)
            if moved is None:
                raise Skip("no data dir")
            ctx.log.info("data_archived", member=op.member, path=str(moved))

"""stop-member: stop etcd on its node, then (when asked) move its data aside."""

from __future__ import annotations

from ckeetcd.model import Op
from ckeetcd.ops.context import OpContext, Skip


async def run(ctx: OpContext, op: Op) -> None:
    async with ctx.step(op, "stop-process"):
        if not await ctx.runtime.stop(op.member):
            raise Skip("not running")
    if op.detail == "archive-data":
        async with ctx.step(op, "archive-data"):
            moved = await ctx.runtime.archive_data(op.member)
            if moved is None:
                raise Skip("no data dir")
            ctx.log.info("data_archived", member=op.member, path=str(moved))

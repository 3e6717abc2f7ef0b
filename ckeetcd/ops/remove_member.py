"""remove-member: take a member out of the etcd member list."""

from __future__ import annotations

from ckeetcd.core.model import Op
from ckeetcd.ops.context import OpContext
from ckeetcd.ops.snapshot import pre_change_snapshot


async def run(ctx: OpContext, op: Op) -> None:
    client = ctx.leader_client(exclude=op.member_id)
    if op.member_id not in {m.id for m in await client.member_list()}:
        await ctx.skip(op, "member-remove", "no longer a member", member_id=f"{op.member_id:x}")
        return
    await pre_change_snapshot(ctx, op)
    async with ctx.step(op, "member-remove", member_id=f"{op.member_id:x}"):
        if ctx.starts is not None and op.member:
            # The member added again under this name is a new one (empty data, new ID):
            # it must not wait out the restart back-off of the one removed (forgotten
            # first, so that a daemon killed right after the removal has nothing left).
            ctx.starts.forget(op.member)
        await client.member_remove(op.member_id)

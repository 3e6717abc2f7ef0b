"""remove-member: take a member out of the etcd member list."""

from __future__ import annotations

from ckeetcd.core.model import Op
from ckeetcd.ops.context import OpContext, Skip
from ckeetcd.ops.snapshot import pre_change_snapshot


async def run(ctx: OpContext, op: Op) -> None:
    client = ctx.leader_client(exclude=op.member_id)
    if op.member_id not in {m.id for m in await client.member_list()}:
        async with ctx.step(op, "member-remove", member_id=f"{op.member_id:x}"):
            raise Skip("no longer a member")
        return
    await pre_change_snapshot(ctx, op)
    async with ctx.step(op, "member-remove", member_id=f"{op.member_id:x}"):
        await client.member_remove(op.member_id)

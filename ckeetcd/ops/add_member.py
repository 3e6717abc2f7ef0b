"""add-member: add the member to the cluster as a learner (never as a voter).

etcd answers `unhealthy cluster` for a few seconds after a member (re)joins
its peers; that is retried with backoff inside the step's budget.
"""

from __future__ import annotations

import asyncio

from ckeetcd.core.model import Op
from ckeetcd.etcd import EtcdError
from ckeetcd.ops.context import OpContext, OpFailed, Skip
from ckeetcd.ops.snapshot import pre_change_snapshot

RETRY_BUDGET = 15.0


async def run(ctx: OpContext, op: Op) -> None:
    client = ctx.leader_client()
    members = await client.member_list()
    if any(op.peer_url in m.peer_urls for m in members):
        async with ctx.step(op, "member-add"):
            raise Skip("already a member")
        return
    if any(m.learner for m in members):
        raise OpFailed("another learner is in flight")
    await pre_change_snapshot(ctx, op)
    async with ctx.step(op, "member-add"):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_BUDGET
        delay = 0.1
        while True:
            try:
                added = await client.member_add(op.peer_url, learner=True)
                ctx.log.info("member_added", member=op.member, member_id=f"{added.id:x}")
                return
            except EtcdError as e:
                if "unhealthy cluster" not in e.details or loop.time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

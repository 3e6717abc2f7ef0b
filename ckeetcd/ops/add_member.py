"""add-member: add the member to the cluster as a learner (never as a voter).

etcd answers `unhealthy cluster` for a few seconds after a member (re)joins
its peers; that is retried with backoff inside the step's budget.
"""

from __future__ import annotations

from ckeetcd.core.model import Op
from ckeetcd.etcd import EtcdError
from ckeetcd.ops.context import OpContext, OpFailed
from ckeetcd.ops.snapshot import pre_change_snapshot
from ckeetcd.support.polling import Backoff, Poll, retry

RETRY_BUDGET = 15.0
RETRY_BACKOFF = Backoff(0.1, factor=2, cap=1.0)


def _unhealthy(e: Exception) -> bool:
    return isinstance(e, EtcdError) and "unhealthy cluster" in e.details


async def run(ctx: OpContext, op: Op) -> None:
    client = ctx.leader_client()
    members = await client.member_list()
    if any(op.peer_url in m.peer_urls for m in members):
        await ctx.skip(op, "member-add", "already a member")
        return
    if any(m.learner for m in members):
        raise OpFailed("another learner is in flight")
    await pre_change_snapshot(ctx, op)
    async with ctx.step(op, "member-add"):
        added = await retry(lambda: client.member_add(op.peer_url, learner=True),
                            Poll(RETRY_BUDGET, RETRY_BACKOFF), _unhealthy)
        ctx.log.info("member_added", member=op.member, member_id=f"{added.id:x}")

"""promote-member: make a caught-up learner a voter.

Sent to the leader: with auth on, MemberPromote sent to a follower hangs
until its deadline (etcd #20757). Too early is FAILED_PRECONDITION; retried
with backoff inside the budget, then left to the next cycle.
"""

from __future__ import annotations

import asyncio

from ckeetcd.core.model import Op
from ckeetcd.etcd import EtcdError
from ckeetcd.ops.context import OpContext, Skip

RETRY_BUDGET = 20.0


async def run(ctx: OpContext, op: Op) -> None:
    async with ctx.step(op, "member-promote", member_id=f"{op.member_id:x}"):
        client = ctx.leader_client(exclude=op.member_id)
        member = next((m for m in await client.member_list() if m.id == op.member_id), None)
        if member is None:
            raise Skip("no longer a member")
        if not member.learner:
            raise Skip("already a voter")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_BUDGET
        delay = 0.05
        while True:
            try:
                await client.member_promote(op.member_id)
                return
            except EtcdError as e:
                if e.code != "FAILED_PRECONDITION" or loop.time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

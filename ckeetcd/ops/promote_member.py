"""promote-member: make a caught-up learner a voter.

Sent to the leader: with auth on, MemberPromote sent to a follower hangs
until its deadline (etcd #20757). Too early is FAILED_PRECONDITION; retried
with backoff inside the budget, then left to the next cycle.
"""

from __future__ import annotations

from ckeetcd.core.model import Op
from ckeetcd.etcd import EtcdError
from ckeetcd.ops.context import OpContext, Skip
from ckeetcd.support.polling import Backoff, Poll, retry

RETRY_BUDGET = 20.0
RETRY_BACKOFF = Backoff(0.05, factor=2, cap=1.0)


def _too_early(e: Exception) -> bool:
    return isinstance(e, EtcdError) and e.code == "FAILED_PRECONDITION"


async def run(ctx: OpContext, op: Op) -> None:
    async with ctx.step(op, "member-promote", member_id=f"{op.member_id:x}"):
        client = ctx.leader_client(exclude=op.member_id)
        member = next((m for m in await client.member_list() if m.id == op.member_id), None)
        if member is None:
            raise Skip("no longer a member")
        if not member.learner:
            raise Skip("already a voter")
        await retry(lambda: client.member_promote(op.member_id),
                    Poll(RETRY_BUDGET, RETRY_BACKOFF), _too_early)

"""move-leader: hand raft leadership to a member a rolling change has already changed.

So the leader is restarted as a follower: the cluster elects no new leader
while it is down (a leader killed where it stands costs an election timeout
of stalled writes). MoveLeader is only accepted by the leader; the op then
waits until the target itself says it leads. Raft drops the proposals a leader
gets while it hands over, so with a servers file the leader is cut from it
first and the op drains ([apiserver] drain_seconds) before it moves.
"""

from __future__ import annotations

import asyncio

from ckeetcd.core.model import MoveLeader
from ckeetcd.etcd import EtcdError
from ckeetcd.ops.context import OpContext, OpFailed, Skip
from ckeetcd.support.polling import Backoff, Poll

MOVE_WATCH = 10.0  # seconds the target is given to report itself leader


async def run(ctx: OpContext, op: MoveLeader) -> None:
    obs = ctx.observed
    target = next((m for m in obs.members or () if m.id == op.member_id), None)
    if target is None or not target.client_urls:
        raise OpFailed(f"{op.member} is not in the member list")
    if op.drain and ctx.config.apiserver.drain_seconds > 0:  # its clients move off first
        async with ctx.step(op, "drain-traffic", seconds=ctx.config.apiserver.drain_seconds):
            await asyncio.sleep(ctx.config.apiserver.drain_seconds)
    async with ctx.step(op, "move-leader", to=f"{op.member_id:x}"):
        leader = obs.leader_id()
        if leader == op.member_id:
            raise Skip(f"{op.member} leads already")
        live = next((m for m in obs.members or () if m.id == leader and m.client_urls), None)
        if live is None:
            raise OpFailed("no raft leader to move leadership from")
        await ctx.pool.get(live.client_urls[0]).move_leader(op.member_id)
    async with ctx.step(op, "watch-leader"):
        async for _ in Poll(MOVE_WATCH, Backoff(0.05)):
            try:
                h = await ctx.pool.get(target.client_urls[0]).status(timeout=0.5)
            except EtcdError:
                continue
            if h.leader_id == op.member_id:
                return
        raise OpFailed(f"{op.member} did not report itself leader within {MOVE_WATCH:.0f} s")

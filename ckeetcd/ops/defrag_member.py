"""defrag-member: defragment one member's backend, only while every member is healthy.

A member being defragmented blocks its reads and writes, so: never two at a
time (ops run one after the other) and never while any other member is down
(then the defragmented one could cost quorum). decide() only asks when the
snapshot was all healthy; `check-health` asks every member again right
before, `wait-applied` waits until this member applied everything the
cluster had committed (a member that was down catches up first, and a
compaction just made is in its backend), and `wait-healthy` waits for it
to answer again before the next op may touch another member. A scheduled
defragmentation (detail "fragmented") is skipped when the fresh
fragmentation is no longer above [maintenance] defrag_threshold; a NOSPACE
one always runs.
"""

from __future__ import annotations

import asyncio

from ckeetcd.core.model import Health, Op
from ckeetcd.etcd import EtcdError
from ckeetcd.ops.context import OpContext, OpFailed, Skip

DEFRAG_TIMEOUT = 600.0
HEALTHY_AGAIN = 30.0
CATCH_UP = 30.0


async def member_statuses(ctx: OpContext) -> dict[str, Health]:
    """Fresh Status of every member in a fresh member list, by member name (or hex ID)."""
    members = await ctx.leader_client().member_list()

    async def one(urls: tuple[str, ...]) -> Health:
        if not urls:
            return Health(healthy=False, error="never started")
        try:
            return await ctx.pool.get(urls[0]).status()
        except EtcdError as e:
            return Health(healthy=False, error=f"{e.code}: {e.details}")

    found = await asyncio.gather(*(one(m.client_urls) for m in members))
    return {m.name or f"{m.id:x}": h for m, h in zip(members, found, strict=True)}


async def run(ctx: OpContext, op: Op) -> None:
    skipped = False
    async with ctx.step(op, "check-health", reason=op.detail):
        statuses = await member_statuses(ctx)
        sick = sorted(n for n, h in statuses.items() if not h.healthy)
        if sick:
            raise OpFailed(f"not defragmenting {op.member} while {', '.join(sick)} "
                           "not healthy")
        mine = statuses.get(op.member)
        if mine is None:
            raise OpFailed(f"{op.member} is not a member")
        threshold = ctx.config.maintenance.defrag_threshold
        if op.detail == "fragmented" and mine.fragmentation <= threshold:
            skipped = True
            raise Skip(f"{mine.fragmentation:.0%} free, not above {threshold:.0%}")
    if skipped:
        return
    client = ctx.pool.get(op.client_url)
    committed = max(h.raft_index for h in statuses.values())
    async with ctx.step(op, "wait-applied", index=committed):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATCH_UP
        while (mine := await client.status()).raft_applied_index < committed:
            if loop.time() > deadline:
                raise OpFailed(f"{op.member} applied only {mine.raft_applied_index} of "
                               f"{committed} after {CATCH_UP:g}s")
            await asyncio.sleep(0.05)
    async with ctx.step(op, "defragment", db_size=mine.db_size,
                        db_size_in_use=mine.db_size_in_use):
        await client.defragment(timeout=DEFRAG_TIMEOUT)
    async with ctx.step(op, "wait-healthy"):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HEALTHY_AGAIN
        while True:
            try:
                after = await client.status()
                if after.healthy:
                    break
            except EtcdError:
                pass
            if loop.time() > deadline:
                raise OpFailed(f"{op.member} not healthy {HEALTHY_AGAIN:g}s after defragmenting")
            await asyncio.sleep(0.1)
    ctx.log.info("defragmented", member=op.member, reason=op.detail,
                 db_size_before=mine.db_size, db_size=after.db_size,
                 db_size_in_use=after.db_size_in_use)

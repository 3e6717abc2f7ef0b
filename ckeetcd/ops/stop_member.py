"""stop-member: stop etcd on its node, then (when asked) move its data aside.

Moved-aside data is kept for the newest `[maintenance] removed_data_keep`
removals of that member; older archives are deleted in the same op.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ckeetcd.core.model import StopMember
from ckeetcd.nodes import Archive
from ckeetcd.ops.context import OpContext, Skip
from ckeetcd.ops.snapshot import pre_change_snapshot


async def run(ctx: OpContext, op: StopMember) -> None:
    # A leaving member that is not the leader gains nothing from etcd's ~1 s
    # graceful stop: its data is kept (moved aside) and the WAL is fsynced. A
    # leader gets SIGTERM so it hands leadership over instead of costing an
    # election timeout.
    began = time.monotonic()
    if op.pre_snapshot:  # the first member of a rolling change: a verified snapshot first
        await pre_change_snapshot(ctx, op, op.snapshot_tag)
    drain = ctx.config.apiserver.drain_seconds - (time.monotonic() - began)
    if op.drain and drain > 0:  # just cut from the servers file: let its clients move off
        async with ctx.step(op, "drain-traffic", seconds=round(drain, 3)):
            await asyncio.sleep(drain)
    leaving = op.archive_data
    is_leader = op.member_id != 0 and op.member_id == ctx.observed.leader_id()
    grace = 0.0 if leaving and not is_leader else 10.0
    async with ctx.step(op, "stop-process", graceful=grace > 0):
        if not await ctx.runtime.stop(op.member, timeout=grace):
            raise Skip("not running")
        if ctx.starts is not None:
            ctx.starts.stopped(op.member)  # on purpose: no member_exited
    if op.archive_data:
        async with ctx.step(op, "archive-data"):
            moved = await ctx.runtime.archive_data(op.member)
            if moved is None:
                raise Skip("no data dir")
            ctx.log.info("data_archived", member=op.member, path=str(moved))
        keep = ctx.config.maintenance.removed_data_keep
        async with ctx.step(op, "prune-archives", keep=keep):
            gone = await ctx.runtime.prune_archives(op.member, keep)
            if not gone:
                raise Skip(f"at most {keep} kept")
            log_pruned(ctx.log, op.member, keep, gone)


def log_pruned(log: Any, member: str, keep: int, gone: list[Archive]) -> None:
    log.info("archives_pruned", member=member, keep=keep, removed=[a.name for a in gone],
             freed_bytes=sum(a.bytes for a in gone))

"""The pre-change snapshot step: taken before every membership change (rule 6)."""

from __future__ import annotations

import datetime as dt

from ckeetcd.core.model import Op
from ckeetcd.etcd import snapshot
from ckeetcd.ops.context import OpContext


async def pre_change_snapshot(ctx: OpContext, op: Op) -> None:
    async with ctx.step(op, "pre-change-snapshot"):
        folder = ctx.config.cluster.state_dir / "snapshots"
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S.%f")
        path = folder / f"pre-change-{stamp}-{op.kind}-{op.member}.db"
        size = await snapshot.save(ctx.leader_client(exclude=op.member_id), path)
        snapshot.rotate(folder, "pre-change-*.db", ctx.config.backup.pre_change_keep)
        ctx.log.info("snapshot_saved", path=str(path), size=size, reason=op.kind)

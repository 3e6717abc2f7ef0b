"""The pre-change snapshot step: taken before every membership change (rule 6)."""

from __future__ import annotations

import datetime as dt
import time

from ckeetcd.core.model import Op
from ckeetcd.etcd import snapshot
from ckeetcd.ops.context import OpContext, Skip

TAG_FRESH = 3600.0  # seconds a rolling change's snapshot counts as this change's


async def pre_change_snapshot(ctx: OpContext, op: Op, tag: str = "") -> None:
    """`tag`: one snapshot per tag (a rolling change's); skipped when one is kept."""
    async with ctx.step(op, "pre-change-snapshot"):
        folder = ctx.config.cluster.state_dir / "snapshots"
        fresh = [p for p in folder.glob(f"pre-change-*-{tag}.db")
                 if time.time() - p.stat().st_mtime < TAG_FRESH] if tag else []
        if fresh:  # the same change again much later (A -> B -> A -> B) gets a new one
            raise Skip(f"taken for this change already: {max(fresh).name}")
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S.%f")
        suffix = f"-{tag}" if tag else ""
        path = folder / f"pre-change-{stamp}-{op.kind}-{op.member}{suffix}.db"
        size = await snapshot.save(ctx.leader_client(exclude=op.member_id), path)
        snapshot.rotate(folder, "pre-change-*.db", ctx.config.backup.pre_change_keep)
        ctx.log.info("snapshot_saved", path=str(path), size=size, reason=op.kind)

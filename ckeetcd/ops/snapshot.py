"""The pre-change snapshot step: taken before every membership change (rule 6)."""

from __future__ import annotations

import datetime as dt
import time

from ckeetcd.core.model import Op
from ckeetcd.etcd import snapshot
from ckeetcd.ops.context import OpContext, Skip

TAG_FRESH = 3600.0  # seconds a rolling change's snapshot counts as this change's


def kept_for_change(taken: dict[str, float], tag: str, now: float) -> str | None:
    """The snapshot (file name -> mtime) already taken for this rolling change, if any.

    Only the newest pre-change snapshot can be this change's: any snapshot after it
    (another change's, a membership change's) means the cluster changed since, so
    the same differences again (A -> B -> A -> B) get a snapshot of their own.
    Names sort by their UTC stamp."""
    if not tag or not taken:
        return None
    newest = max(taken)
    fresh = now - taken[newest] < TAG_FRESH
    return newest if newest.endswith(f"-{tag}.db") and fresh else None


async def pre_change_snapshot(ctx: OpContext, op: Op, tag: str = "") -> None:
    """`tag`: one snapshot per tag (a rolling change's); skipped when one is kept."""
    async with ctx.step(op, "pre-change-snapshot"):
        folder = ctx.config.cluster.state_dir / "snapshots"
        taken = {p.name: p.stat().st_mtime for p in folder.glob("pre-change-*.db")}
        kept = kept_for_change(taken, tag, time.time())
        if kept:
            raise Skip(f"taken for this change already: {kept}")
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S.%f")
        suffix = f"-{tag}" if tag else ""
        path = folder / f"pre-change-{stamp}-{op.kind}-{op.member}{suffix}.db"
        size = await snapshot.save(ctx.leader_client(exclude=op.member_id), path)
        snapshot.rotate(folder, "pre-change-*.db", ctx.config.backup.pre_change_keep)
        ctx.log.info("snapshot_saved", path=str(path), size=size, reason=op.kind)

"""compact: compact the key-value history to the current revision.

The first step out of NOSPACE: old revisions are what usually fills the
backend. Physical, so the leader has freed the pages when the step ends (the
followers apply the same compaction through raft right after). Compacting to
a revision that is already compacted is a Skip: the op is safe to repeat.
"""

from __future__ import annotations

from ckeetcd.core.model import Op
from ckeetcd.etcd import EtcdError
from ckeetcd.ops.context import OpContext, Skip

COMPACT_TIMEOUT = 120.0


async def run(ctx: OpContext, op: Op) -> None:
    async with ctx.step(op, "compact"):
        client = ctx.leader_client()
        revision = await client.revision()
        try:
            await client.compact(revision, timeout=COMPACT_TIMEOUT)
        except EtcdError as e:
            if "required revision has been compacted" in e.details:
                raise Skip(f"already compacted at revision {revision}") from None
            raise
        ctx.log.info("compacted", revision=revision, reason=op.detail)

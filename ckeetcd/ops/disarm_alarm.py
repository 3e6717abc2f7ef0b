"""disarm-alarm: deactivate an alarm (NOSPACE) once the space is really back.

Runs after compact and a defragmentation of every member. It checks that
every member's database is now clearly below the backend quota (with less
than MIN_HEADROOM of the quota free, etcd would raise NOSPACE again at the
next writes: the data itself is too big; an operator must delete keys or
raise [etcd] quota_backend_bytes), then deactivates the alarm for every
member that raised it.
"""

from __future__ import annotations

import contextlib

from ckeetcd.core.config import Config
from ckeetcd.core.model import Op
from ckeetcd.ops.context import OpContext, OpFailed, Skip
from ckeetcd.ops.defrag_member import member_statuses

DEFAULT_QUOTA = 2 * 1024**3  # etcd's default --quota-backend-bytes
MIN_HEADROOM = 0.05


def backend_quota(config: Config) -> int:
    """The quota members run with: [etcd] quota_backend_bytes, an extra_args flag, or etcd's."""
    quota = config.etcd.quota_backend_bytes
    for arg in config.etcd.extra_args:
        if arg.startswith("--quota-backend-bytes="):
            with contextlib.suppress(ValueError):
                quota = int(arg.split("=", 1)[1])
    return quota or DEFAULT_QUOTA


async def run(ctx: OpContext, op: Op) -> None:
    skipped = False
    client = ctx.leader_client()
    async with ctx.step(op, "check-space", alarm=op.detail):
        if not [a for a in await client.alarms() if a[1] == op.detail]:
            skipped = True
            raise Skip(f"no {op.detail} alarm")
        if op.detail == "NOSPACE":
            quota = backend_quota(ctx.config)
            full = sorted(f"{n} ({h.db_size} bytes)" for n, h in (await member_statuses(ctx))
                          .items() if h.db_size > quota * (1 - MIN_HEADROOM))
            if full:
                raise OpFailed(f"still within {MIN_HEADROOM:.0%} of the {quota}-byte quota "
                               f"after compaction and defragmentation: {', '.join(full)}; "
                               "delete data or raise [etcd] quota_backend_bytes")
    if skipped:
        return
    async with ctx.step(op, "disarm", alarm=op.detail):
        alarms = [a for a in await client.alarms() if a[1] == op.detail]
        for member_id, alarm in alarms:
            await client.alarm("DEACTIVATE", member_id, alarm)
        ctx.log.info("alarm_disarmed", alarm=op.detail,
                     members=[f"{member_id:x}" for member_id, _ in alarms])

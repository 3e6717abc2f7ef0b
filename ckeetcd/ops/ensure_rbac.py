"""ensure-rbac: root, kube-apiserver (/registry/ only), configured users, auth on.

Held (nothing written, the step records why) while members run more than
one etcd minor: auth WAL entries changed format in 3.5 (etcd #11943), so no
user, role, permission or prune is written mid-upgrade (Observed.auth_hold).
"""

from __future__ import annotations

from ckeetcd.core.model import Op
from ckeetcd.etcd.rbac import ensure_rbac
from ckeetcd.ops.context import OpContext, OpFailed, Skip


async def run(ctx: OpContext, op: Op) -> None:
    async with ctx.step(op, "converge"):
        hold = ctx.observed.auth_hold()
        if hold:  # failed, not skipped: the runner backs off instead of re-deciding at once
            raise OpFailed(f"held: {hold}")
        changes = await ensure_rbac(ctx.leader_client(), ctx.desired)
        if not changes:
            raise Skip("already in place")
        ctx.log.info("rbac_changed", changes=changes)

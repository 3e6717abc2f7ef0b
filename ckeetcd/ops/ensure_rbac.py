"""ensure-rbac: root, kube-apiserver (/registry/ only), configured users, auth on."""

from __future__ import annotations

from ckeetcd.core.model import Op
from ckeetcd.etcd.rbac import ensure_rbac
from ckeetcd.ops.context import OpContext, Skip


async def run(ctx: OpContext, op: Op) -> None:
    async with ctx.step(op, "converge"):
        changes = await ensure_rbac(ctx.leader_client(), ctx.desired)
        if not changes:
            raise Skip("already in place")
        ctx.log.info("rbac_changed", changes=changes)

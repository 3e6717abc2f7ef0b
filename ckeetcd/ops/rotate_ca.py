"""rotate-ca: the steps of a CA rotation that touch the pki dir, not a member
(ckeetcd.core.carotation decides which): make the new CA, begin the grace period,
finish (the new CA's files replace the old ones). Each re-reads the record first,
so a step a killed daemon already did is skipped, not done twice."""

from __future__ import annotations

import time
from dataclasses import replace

from ckeetcd.core.carotation import Act
from ckeetcd.core.model import RotateCA
from ckeetcd.ops.context import OpContext, OpFailed, Skip
from ckeetcd.pki.rotationfiles import finish, make_next, read_rotation, write_rotation


async def run(ctx: OpContext, op: RotateCA) -> None:
    pki = ctx.config.cluster.pki_dir
    async with ctx.step(op, op.act, role=op.role):
        rotation = read_rotation(pki, op.role)
        if rotation is None:
            raise OpFailed(f"no {op.role} CA rotation is recorded in {pki}")
        if rotation.record.done:
            raise Skip("the rotation is done")
        if op.act == Act.MAKE_CA:
            ca, rotation = make_next(pki, ctx.desired.cluster_name, rotation)
            ctx.log.info("ca_created", role=op.role, rotation=True, new=rotation.record.new,
                         subject=ca.cert.subject.rfc4514_string())
        elif op.act == Act.START_GRACE:
            if rotation.record.grace_until:
                raise Skip("the grace period began already")
            until = time.time() + ctx.desired.rotation_grace
            write_rotation(pki, replace(rotation, record=replace(rotation.record,
                                                                 grace_until=until)))
            ctx.log.info("ca_rotation_grace", role=op.role, grace_until=until)
        elif op.act == Act.FINISH:
            finish(pki, rotation)
            ctx.log.info("ca_rotated", role=op.role, old=rotation.record.old,
                         new=rotation.record.new, migration=rotation.record.migration)
        else:
            raise OpFailed(f"{op.act}: not a step this daemon can take yet")

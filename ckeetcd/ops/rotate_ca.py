"""rotate-ca: the steps of a CA rotation that touch the pki dir, not a member
(ckeetcd.core.carotation decides which): make the new CA, re-issue this daemon's
root certificate from the new client CA, begin the grace period, finish (the new
CA's files replace the old ones; a client finish also puts ca.crt back as the file
servers are verified with). Each re-reads the record first,
so a step a killed daemon already did is skipped, not done twice."""

from __future__ import annotations

import time
from dataclasses import replace

from ckeetcd.core.carotation import CLIENT, Act
from ckeetcd.core.model import RotateCA
from ckeetcd.ops.context import OpContext, OpFailed, Skip
from ckeetcd.ops.tls import use_client_bundle
from ckeetcd.pki import not_after, write_cert_key
from ckeetcd.pki.rotationfiles import (
    Rotation,
    finish,
    load_next,
    make_next,
    read_rotation,
    signer_of,
    write_rotation,
)


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
        elif op.act == Act.REISSUE_DAEMON:
            _reissue_daemon(ctx, rotation)
        elif op.act == Act.START_GRACE:
            if rotation.record.grace_until:
                raise Skip("the grace period began already")
            until = time.time() + ctx.desired.rotation_grace
            write_rotation(pki, replace(rotation, record=replace(rotation.record,
                                                                 grace_until=until)))
            ctx.log.info("ca_rotation_grace", role=op.role, grace_until=until)
        elif op.act == Act.FINISH:
            finish(pki, rotation)
            if op.role == CLIENT:
                use_client_bundle(ctx, None)  # the bundle is gone: ca.crt (the new CA)
            ctx.log.info("ca_rotated", role=op.role, old=rotation.record.old,
                         new=rotation.record.new, migration=rotation.record.migration)
        else:
            raise OpFailed(f"{op.act}: not a step this daemon can take yet")


def _reissue_daemon(ctx: OpContext, rotation: Rotation) -> None:
    """This daemon's root client certificate from the new client CA (key first), and new
    channels that present it; skipped when a killed daemon did it already."""
    tls = ctx.pool.tls
    if signer_of(tls.cert.read_bytes() if tls.cert.exists() else None,
                 rotation) == rotation.record.new:
        raise Skip("this daemon's certificate is from the new client CA already")
    new = load_next(ctx.config.cluster.pki_dir, rotation)
    if new is None:
        raise OpFailed("the new client CA's key is not on this host")
    use_client_bundle(ctx, rotation)
    pair = new.issue("root", ctx.config.tls.daemon_cert_lifetime)
    write_cert_key(tls.cert, tls.key, pair)
    ctx.pool.rotate()
    ctx.log.info("daemon_cert_renewed", how="issued by the new client CA (rotation)",
                 not_after=str(not_after(pair.cert_pem)))

"""Member certificates on the node: issued by the CA, refreshed when wrong."""

from __future__ import annotations

import datetime as dt

from ckeetcd.ops.context import OpContext, OpFailed
from ckeetcd.pki import cert_ips, member_ips, member_tls_files, not_after

RENEW_BEFORE = dt.timedelta(days=30)


async def ensure_member_tls(ctx: OpContext, name: str) -> bool:
    """Install certs unless current ones match the CA, the address and are not expiring."""
    d = ctx.desired.by_name(name)
    cert = await ctx.runtime.read_tls(name, "server.crt")
    if d is None:
        if cert is None:
            raise OpFailed(f"{name} is not a desired member and has no certificates")
        return False  # a leaving member restarted for quorum keeps what it has
    ca = await ctx.runtime.read_tls(name, "ca.crt")
    if (
        cert is not None
        and ca == ctx.ca.cert_pem
        and set(cert_ips(cert)) == set(member_ips(d.address))
        and not_after(cert) - dt.datetime.now(dt.timezone.utc) > RENEW_BEFORE
    ):
        return False
    await ctx.runtime.install_tls(name, member_tls_files(ctx.ca, name, d.address))
    return True

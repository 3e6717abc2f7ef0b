"""Member certificates on the node: issued by the CA, re-issued when wrong or expiring."""

from __future__ import annotations

import datetime as dt

from ckeetcd.ops.context import OpContext, OpFailed
from ckeetcd.pki import PEER_CA_CERT, member_tls_files, member_tls_problem

# the keys too: a set a killed daemon left half-written must not pass as fine
TLS_CHECKED = ("ca.crt", "server.crt", "peer.crt", "server.key", "peer.key")


def peer_trust(ctx: OpContext) -> str:
    """The tls file --peer-trusted-ca-file names (ckeetcd.nodes.base.MemberSpec)."""
    return PEER_CA_CERT if ctx.peer is not ctx.ca else "ca.crt"


async def member_tls_state(ctx: OpContext, name: str) -> str:
    """Why `name`'s certificates must be re-issued ("" when they are fine)."""
    d = ctx.desired.by_name(name)
    if d is None:
        return ""
    separate = ctx.peer is not ctx.ca
    names = TLS_CHECKED + ((PEER_CA_CERT,) if separate else ())
    files = {f: await ctx.runtime.read_tls(name, f) for f in names}
    return member_tls_problem(files, ctx.ca.cert_pem, d.address, ctx.desired.member_dns,
                              ctx.config.tls.member_cert_renew_before,
                              dt.datetime.now(dt.timezone.utc),
                              peer_ca_pem=ctx.peer.cert_pem if separate else None)


async def ensure_member_tls(ctx: OpContext, name: str, force: bool = False) -> bool:
    """Install fresh certs when missing, wrong or expiring (or when forced)."""
    d = ctx.desired.by_name(name)
    if d is None:
        if await ctx.runtime.read_tls(name, "server.crt") is None:
            raise OpFailed(f"{name} is not a desired member and has no certificates")
        return False  # a leaving member restarted for quorum keeps what it has
    if not force and not await member_tls_state(ctx, name):
        return False
    files = member_tls_files(ctx.ca, name, d.address, ctx.config.tls.member_cert_lifetime,
                             ctx.desired.member_dns, peer_ca=ctx.peer)
    await ctx.runtime.install_tls(name, files)
    return True

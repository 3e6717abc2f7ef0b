"""renew-member-certs: replace a member's certificates without restarting it.

etcd reads its certificate files on every new TLS handshake, so atomically
replacing them takes effect for new connections while existing ones carry
on: no request fails. The op waits until the member serves the new cert.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit

from ckeetcd.core.carotation import CLIENT, PEER
from ckeetcd.core.model import RenewCerts
from ckeetcd.ops.context import OpContext, OpFailed, Skip
from ckeetcd.ops.tls import ensure_member_tls, member_tls_state
from ckeetcd.pki.rotationfiles import read_rotation, signer_of
from ckeetcd.support.polling import Backoff, Poll

SERVE_DEADLINE = 10.0
CERT_OF = {PEER: "peer.crt", CLIENT: "server.crt"}  # the member certificate of each role


async def served_cert(ctx: OpContext, url: str) -> bytes:
    """The DER certificate a member presents on `url` (handshake with our client cert)."""
    tls = ctx.pool.tls
    sslctx = ssl.create_default_context(cafile=str(tls.ca))
    sslctx.load_cert_chain(str(tls.cert), str(tls.key))
    parts = urlsplit(url)
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, parts.port, ssl=sslctx,
                                server_hostname=parts.hostname), 3.0)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return bytes(der)


async def _from_new_ca(ctx: OpContext, op: RenewCerts) -> bool:
    """A CA rotation's re-issue: whether the member's certificate of the role is the new
    CA's already (a daemon killed after installing it)."""
    rotation = read_rotation(ctx.config.cluster.pki_dir, op.rotate)
    if rotation is None or not rotation.record.new:
        raise OpFailed(f"no {op.rotate} CA rotation with a new CA is recorded")
    cert = await ctx.runtime.read_tls(op.member, CERT_OF[op.rotate])
    return signer_of(cert, rotation) == rotation.record.new


async def run(ctx: OpContext, op: RenewCerts) -> None:
    async with ctx.step(op, "install-tls") as install:
        # The observation that asked for this may be old (certificate files are
        # read on full observations only): look again before replacing anything.
        if op.rotate:
            if await _from_new_ca(ctx, op):
                raise Skip(f"its {op.rotate} certificate is from the new CA already")
        elif not await member_tls_state(ctx, op.member):
            raise Skip("its certificates are fine now")
        await ensure_member_tls(ctx, op.member, force=True)
    if install.skipped:
        return
    async with ctx.step(op, "verify-served"):
        from cryptography import x509

        installed = await ctx.runtime.read_tls(op.member, "server.crt")
        if installed is None:
            raise OpFailed("no server.crt after install")
        want = x509.load_pem_x509_certificate(installed).serial_number
        async for _ in Poll(SERVE_DEADLINE, Backoff(0.1)):
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                got = x509.load_der_x509_certificate(await served_cert(ctx, op.client_url))
                if got.serial_number == want:
                    return
        raise OpFailed(f"{op.member} still serves its old certificate")

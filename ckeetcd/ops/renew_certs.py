"""renew-member-certs: replace a member's certificates without restarting it.

etcd reads its certificate files on every new TLS handshake, so atomically
replacing them takes effect for new connections while existing ones carry
on: no request fails. The op waits until the member serves the new cert.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

from ckeetcd.core.model import Op
from ckeetcd.ops.context import OpContext, OpFailed, Skip
from ckeetcd.ops.tls import ensure_member_tls, member_tls_state

SERVE_DEADLINE = 10.0


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


async def run(ctx: OpContext, op: Op) -> None:
    needed = True
    async with ctx.step(op, "install-tls"):
        # The observation that asked for this may be old (certificate files are
        # read on full observations only): look again before replacing anything.
        if not await member_tls_state(ctx, op.member):
            needed = False
            raise Skip("its certificates are fine now")
        await ensure_member_tls(ctx, op.member, force=True)
    if not needed:
        return
    async with ctx.step(op, "verify-served"):
        from cryptography import x509

        installed = await ctx.runtime.read_tls(op.member, "server.crt")
        if installed is None:
            raise OpFailed("no server.crt after install")
        want = x509.load_pem_x509_certificate(installed).serial_number
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SERVE_DEADLINE
        while True:
            try:
                got = x509.load_der_x509_certificate(await served_cert(ctx, op.client_url))
                if got.serial_number == want:
                    return
            except (OSError, TimeoutError, ssl.SSLError):
                pass
            if loop.time() > deadline:
                raise OpFailed(f"{op.member} still serves its old certificate")
            await asyncio.sleep(0.1)

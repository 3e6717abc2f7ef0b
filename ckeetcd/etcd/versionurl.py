"""etcd's `/version` over the client URL: the cluster version, which no gRPC call gives.

`GET https://MEMBER:2379/version` answers `{"etcdserver":"3.5.30","etcdcluster":"3.5.0"}`
(3.4 to 3.6). The cluster version is the lowest minor every member runs, as
the leader decided it; the Status RPC carries only the member's own version.
The client certificate is required (`--client-cert-auth`); Python's ssl loads
a certificate and key only from a file, so they go to an anonymous in-memory
file (memfd), never to disk. The request runs on http.client in a thread,
with a deadline.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import ssl
from urllib.parse import urlsplit

from ckeetcd.etcd.client import EtcdError, PemTLS

_contexts: dict[tuple[bytes, bytes, bytes], ssl.SSLContext] = {}


def tls_context(pem: PemTLS) -> ssl.SSLContext:
    """A client context trusting only the cluster CA, with the client certificate (cached)."""
    key = (pem.ca, pem.cert, pem.key)
    ctx = _contexts.get(key)
    if ctx is None:
        ctx = ssl.create_default_context(cadata=pem.ca.decode())
        fd = os.memfd_create("ckeetcd-client-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, pem.cert + b"\n" + pem.key)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        _contexts.clear()  # one live set of credentials (renewals replace it)
        _contexts[key] = ctx
    return ctx


def _get(endpoint: str, pem: PemTLS, timeout: float) -> dict[str, str]:
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 2379,
                                       timeout=timeout, context=tls_context(pem))
    try:
        conn.request("GET", "/version")
        r = conn.getresponse()
        body = r.read(4096)
        if r.status != 200:
            raise EtcdError(endpoint, "HTTP", f"/version answered {r.status}")
    finally:
        conn.close()
    try:
        got = json.loads(body)
    except ValueError:
        raise EtcdError(endpoint, "HTTP", "/version answered no JSON") from None
    if not isinstance(got, dict):
        raise EtcdError(endpoint, "HTTP", "/version answered no JSON object")
    return {k: str(v) for k, v in got.items() if k in ("etcdserver", "etcdcluster")}


async def fetch_version(endpoint: str, pem: PemTLS, timeout: float) -> dict[str, str]:
    """`/version` of one member: {"etcdserver": ..., "etcdcluster": ...}; EtcdError
    (code "UNAVAILABLE" for a connection or TLS failure) when it does not answer.

    etcd says "not_decided" as the cluster version before its first decision.
    """
    try:
        return await asyncio.wait_for(asyncio.to_thread(_get, endpoint, pem, timeout),
                                      timeout + 0.5)
    except (OSError, TimeoutError, http.client.HTTPException) as e:
        raise EtcdError(endpoint, "UNAVAILABLE", f"/version: {e or type(e).__name__}") from e

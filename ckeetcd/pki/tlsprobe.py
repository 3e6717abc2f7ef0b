"""Who signed the certificate a TLS server presents, without a client certificate.

Before a first CA is made, ckeetcd asks each member's client port which CA
its certificate comes from: a member of this cluster already serving means
the cluster exists and its CA must be brought back, not replaced. etcd
requires a client certificate, and with TLS 1.2 the handshake fails before
Python's ssl hands out the server's certificate, so `openssl s_client`
(which prints what the server sent even when the handshake then fails) is
asked instead; `cryptography` parses the certificate. Without openssl the
probe sees nothing, and only the state dir's own signs count.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from cryptography import x509
from cryptography.x509.oid import NameOID

_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def served_certificate(host: str, port: int, timeout: float) -> bytes | None:
    """The PEM of the first certificate served at host:port (None: none seen)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        r = subprocess.run([openssl, "s_client", "-connect", target, "-showcerts"],
                           input=b"", capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = _PEM.search(r.stdout)
    return m.group(0) if m else None


def issuer_names(host: str, port: int, timeout: float = 1.0) -> list[str]:
    """The issuer CNs of the certificate served at host:port; [] when none is seen (nothing
    listens, not TLS, a timeout, no openssl)."""
    pem = served_certificate(host, port, timeout)
    if pem is None:
        return []
    try:
        issuer = x509.load_pem_x509_certificate(pem).issuer
    except ValueError:
        return []
    return [str(a.value) for a in issuer.get_attributes_for_oid(NameOID.COMMON_NAME)]

"""Who signed the certificate a TLS server presents, without a client certificate.

Before a first CA is made, ckeetcd asks each member's client port which CA
its certificate comes from: a member of this cluster already serving means
the cluster exists and its CA must be brought back, not replaced. etcd
requires a client certificate, so the handshake fails before Python's ssl
hands out the server's certificate. With TLS 1.2 (what etcd 3.5 speaks) that
certificate travels in the clear, so it is read from the server's first
flight: only the record and handshake framing is read here (RFC 5246 6.2,
7.4.2); the certificate itself is parsed by `cryptography`. A TLS 1.3 server
finishes the handshake before it checks the client, so ssl hands it out.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time

from cryptography import x509
from cryptography.x509.oid import NameOID

_HANDSHAKE = 22
_CERTIFICATE = 11
_MAX_FLIGHT = 1 << 16


def first_certificate(flight: bytes) -> bytes | None:
    """The DER of the server's first certificate in a TLS 1.2 flight (None: not there yet)."""
    hs = b""
    i = 0
    while i + 5 <= len(flight):
        length = int.from_bytes(flight[i + 3:i + 5], "big")
        if i + 5 + length > len(flight):
            break
        if flight[i] == _HANDSHAKE:
            hs += flight[i + 5:i + 5 + length]
        i += 5 + length
    j = 0
    while j + 4 <= len(hs):
        kind, length = hs[j], int.from_bytes(hs[j + 1:j + 4], "big")
        if j + 4 + length > len(hs):
            return None
        if kind == _CERTIFICATE:
            body = hs[j + 4:j + 4 + length]
            first = int.from_bytes(body[3:6], "big")
            return body[6:6 + first] if len(body) >= 6 + first else None
        j += 4 + length
    return None


def _context(version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # nothing to verify with: the issuer name is all we want
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def _tls12_certificate(host: str, port: int, timeout: float) -> bytes | None:
    out, inc = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = _context(ssl.TLSVersion.TLSv1_2).wrap_bio(inc, out)
    with contextlib.suppress(ssl.SSLWantReadError):  # the ClientHello is out; no answer yet
        tls.do_handshake()
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout) as sock:
        sock.sendall(out.read())
        flight = b""
        while len(flight) < _MAX_FLIGHT and time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(_MAX_FLIGHT)
            if not data:
                break
            flight += data
            der = first_certificate(flight)
            if der is not None:
                return der
    return None


def _tls13_certificate(host: str, port: int, timeout: float) -> bytes | None:
    with socket.create_connection((host, port), timeout) as raw, \
            _context(ssl.TLSVersion.TLSv1_3).wrap_socket(raw) as tls:
        return tls.getpeercert(binary_form=True)


def issuer_names(host: str, port: int, timeout: float = 1.0) -> list[str]:
    """The issuer CNs of the certificate served at host:port; [] when none is seen (nothing
    listens, not TLS, a timeout)."""
    der = None
    for get in (_tls12_certificate, _tls13_certificate):
        try:
            der = get(host, port, timeout)
        except (OSError, ValueError):
            der = None
        if der:
            break
    if not der:
        return []
    try:
        issuer = x509.load_der_x509_certificate(der).issuer
    except ValueError:
        return []
    return [str(a.value) for a in issuer.get_attributes_for_oid(NameOID.COMMON_NAME)]

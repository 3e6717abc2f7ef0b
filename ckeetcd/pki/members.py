"""Member certificates: what each member is issued, and whether what it has will do."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from ckeetcd.core.peercn import MEMBER_URI, PEER_CN
from ckeetcd.pki.authority import CA, MEMBER_LIFETIME, PEER_CA_CERT, CertKey
from ckeetcd.support.files import write_atomic, write_private


def member_ips(address: str) -> tuple[str, ...]:
    """IP SANs of a member cert.

    On loopback etcd checks a peer cert against the connection's source
    address, which is 127.0.0.1 whatever the member's own 127.x address.
    """
    ip = ipaddress.ip_address(address)
    if ip.is_loopback and ip.version == 4 and address != "127.0.0.1":
        return (address, "127.0.0.1")
    return (address,)


def not_after(cert_pem: bytes) -> dt.datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def write_cert_key(cert_path: Path, key_path: Path, pair: CertKey) -> None:
    write_private(key_path, pair.key_pem)
    write_atomic(cert_path, pair.cert_pem)


def member_tls_files(ca: CA, name: str, address: str,
                     lifetime: dt.timedelta = MEMBER_LIFETIME,
                     dns: tuple[str, ...] = ("localhost",),
                     peer_ca: CA | None = None, peer_cn: str = PEER_CN) -> dict[str, bytes]:
    """ca.crt plus server and peer pairs for one member, both usable either way.

    Every peer certificate carries the one CN `--peer-cert-allowed-cn` names
    (ckeetcd.core.peercn); the member's name is its URI SAN. (`peer_cn` is for
    tests that make a cluster as older code did: the member's name.)

    With a separate `peer_ca` the peer pair comes from it and `peer-ca.crt` (the
    only CA the peer port trusts) is added; the server pair stays the client CA's,
    so clients verify servers with the ca.crt that `ckecli etcd issue` hands out.
    The server certificate keeps clientAuth: etcd's gateway dials its own gRPC
    port with it."""
    ips = member_ips(address)
    signer = peer_ca if peer_ca is not None else ca
    server = ca.issue(name, lifetime, server=True, client=True, ips=ips, dns=dns)
    peer = signer.issue(peer_cn, lifetime, server=True, client=True, ips=ips,
                        uris=(MEMBER_URI + name,))
    files = {
        "ca.crt": ca.cert_pem,
        "server.crt": server.cert_pem,
        "server.key": server.key_pem,
        "peer.crt": peer.cert_pem,
        "peer.key": peer.key_pem,
    }
    if peer_ca is not None and peer_ca is not ca:
        files[PEER_CA_CERT] = peer_ca.cert_pem
    return files


def cert_sans(cert_pem: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(IP SANs, DNS SANs) of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return ips, tuple(san.get_values_for_type(x509.DNSName))


def cert_cn(cert_pem: bytes) -> str:
    """The CN of a PEM certificate ("" when it has none)."""
    names = x509.load_pem_x509_certificate(cert_pem).subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether `key_pem` is the private key of the certificate `cert_pem`."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        cert = x509.load_pem_x509_certificate(cert_pem)
    except (ValueError, TypeError):
        return False
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(*raw) == cert.public_key().public_bytes(*raw)


def cert_ips(cert_pem: bytes) -> tuple[str, ...]:
    return cert_sans(cert_pem)[0]


def member_tls_problem(
    files: dict[str, bytes | None],
    ca_pem: bytes,
    address: str,
    dns: tuple[str, ...],
    renew_before: dt.timedelta,
    now: dt.datetime,
    peer_ca_pem: bytes | None = None,
) -> str:
    """Why a member's installed TLS files must be (re)issued; "" when they are fine.

    When `files` has the keys too ("server.key", "peer.key"), each must be there
    and match its certificate: the files are written one by one, so a daemon
    killed while installing them can leave a set whose certificates look fine.
    """
    server, peer, ca = files.get("server.crt"), files.get("peer.crt"), files.get("ca.crt")
    if server is None or peer is None or ca is None:
        return "missing"
    if ca != ca_pem:
        return "signed by another CA"
    if peer_ca_pem is not None and peer_ca_pem != ca_pem:
        installed = files.get(PEER_CA_CERT)
        if installed is None:
            return "missing"
        if installed != peer_ca_pem or not issued_by(peer, peer_ca_pem):
            return "peer certificate not from the peer CA"
    for cert, key_name in ((server, "server.key"), (peer, "peer.key")):
        if key_name not in files:
            continue
        key = files[key_name]
        if key is None:
            return "missing"
        if not key_matches(cert, key):
            return f"{key_name} does not match its certificate"
    want_ips = set(member_ips(address))
    ips, names = cert_sans(server)
    if set(ips) != want_ips or set(names) != set(dns):
        return "server SANs differ"
    if set(cert_ips(peer)) != want_ips:
        return "peer SANs differ"
    if cert_cn(peer) != PEER_CN:
        return f"peer certificate lacks the shared CN {PEER_CN}"
    left = min(not_after(server), not_after(peer)) - now
    if left <= renew_before:
        return f"expires in {int(left.total_seconds())}s"
    return ""


def issued_by(cert_pem: bytes | None, ca_pem: bytes) -> bool:
    """Whether the CA of `ca_pem` signed `cert_pem` (nothing to check: no)."""
    if not cert_pem or not ca_pem:
        return False
    try:
        x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(
            x509.load_pem_x509_certificate(ca_pem))
    except Exception:  # ValueError, TypeError, InvalidSignature: not issued by it either way
        return False
    return True

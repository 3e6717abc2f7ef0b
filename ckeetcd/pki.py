"""CA, member and client certificates (ECDSA P-256), written with safe modes.

The CA lives in `<state_dir>/pki` (0700); every private key is 0600 and is
written atomically, so a crash never leaves a half key behind. With
`--client-cert-auth` the certificate CN is the etcd user name.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_LIFETIME = dt.timedelta(days=3650 * 2)
MEMBER_LIFETIME = dt.timedelta(days=365)
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CertKey:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class TLSFiles:
    """Paths a TLS client or server needs."""

    ca: Path
    cert: Path
    key: Path


class CA:
    """A certificate authority backed by two files."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                 cert_path: Path) -> None:
        self.cert = cert
        self.key = key
        self.cert_path = cert_path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        lifetime: dt.timedelta,
        *,
        server: bool = False,
        client: bool = True,
        ips: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
        now: dt.datetime | None = None,
    ) -> CertKey:
        """Sign a fresh key for `common_name` valid for `lifetime` from now."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert_pem = self.sign(common_name, key.public_key(), lifetime, server=server,
                             client=client, ips=ips, dns=dns, now=now)
        return CertKey(cert_pem, key_pem(key))

    def sign(
        self,
        common_name: str,
        public_key: ec.EllipticCurvePublicKey,
        lifetime: dt.timedelta,
        *,
        server: bool = False,
        client: bool = True,
        ips: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
        now: dt.datetime | None = None,
    ) -> bytes:
        """A certificate (PEM) for a key held elsewhere, e.g. from a CSR."""
        now = now or dt.datetime.now(dt.timezone.utc)
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_encipherment=True, content_commitment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        sans += [x509.DNSName(d) for d in dns]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600 from its first byte."""
    write_atomic(path, data, 0o600)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (fsync the folder itself)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def ca_paths(pki_dir: Path) -> tuple[Path, Path]:
    return pki_dir / CA_CERT, pki_dir / CA_KEY


def load_ca(pki_dir: Path) -> CA:
    """Load the CA; raise FileNotFoundError when it has not been created yet."""
    cert_path, key_path = ca_paths(pki_dir)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: not an EC private key")
    return CA(cert, key, cert_path)


def ensure_ca(pki_dir: Path, name: str) -> CA:
    """Load the CA, creating it on first start."""
    ensure_private_dir(pki_dir)
    cert_path, key_path = ca_paths(pki_dir)
    if cert_path.exists() and key_path.exists():
        return load_ca(pki_dir)
    now = dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ckeetcd CA {name}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, key_pem(key))
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return CA(cert, key, cert_path)


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
                     dns: tuple[str, ...] = ("localhost",)) -> dict[str, bytes]:
    """ca.crt plus server and peer pairs for one member, both usable either way."""
    ips = member_ips(address)
    server = ca.issue(name, lifetime, server=True, client=True, ips=ips, dns=dns)
    peer = ca.issue(name, lifetime, server=True, client=True, ips=ips)
    return {
        "ca.crt": ca.cert_pem,
        "server.crt": server.cert_pem,
        "server.key": server.key_pem,
        "peer.crt": peer.cert_pem,
        "peer.key": peer.key_pem,
    }


def cert_sans(cert_pem: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(IP SANs, DNS SANs) of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return ips, tuple(san.get_values_for_type(x509.DNSName))


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
    left = min(not_after(server), not_after(peer)) - now
    if left <= renew_before:
        return f"expires in {int(left.total_seconds())}s"
    return ""

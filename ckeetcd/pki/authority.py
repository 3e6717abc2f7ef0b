"""The cluster CA (ECDSA P-256): made once, loaded, never replaced; it issues every leaf.

The CA lives in `<state_dir>/pki` (0700); every private key is 0600 and is
written atomically, so a crash never leaves a half key behind. With
`--client-cert-auth` the certificate CN is the etcd user name.
"""

from __future__ import annotations

import datetime as dt
import errno
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ckeetcd.support.files import ensure_private_dir, write_atomic, write_new

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
# The peer CA signs only the members' peer certificates: the one CA of
# --peer-trusted-ca-file, so no client or user certificate passes on the peer port.
# A cluster made before ckeetcd had it has none, and its peers trust ca.crt.
PEER_CA_CERT = "peer-ca.crt"
PEER_CA_KEY = "peer-ca.key"
CLIENT, PEER = "client", "peer"  # the roles of trust (CA files, subjects)
# Present while this host holds the CA key (it made or imported it): a missing
# ca.key is then a loss, not a follower's normal state (`ca import --no-key`).
CA_KEY_EXPECTED = "ca.key.expected"
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
        uris: tuple[str, ...] = (),
        now: dt.datetime | None = None,
    ) -> CertKey:
        """Sign a fresh key for `common_name` valid for `lifetime` from now."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert_pem = self.sign(common_name, key.public_key(), lifetime, server=server,
                             client=client, ips=ips, dns=dns, uris=uris, now=now)
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
        uris: tuple[str, ...] = (),
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
        sans += [x509.UniformResourceIdentifier(u) for u in uris]
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


class CAError(ValueError):
    """The CA files are there but unusable; the message names the files and says why."""


class CAKeyMismatch(CAError):
    """ca.key is not the key of ca.crt."""


def ca_paths(pki_dir: Path, role: str = CLIENT) -> tuple[Path, Path]:
    """(certificate, key) of the CA of `role`: the client CA (clients, users, the
    servers' certificates) or the peer CA (members' peer certificates only)."""
    if role == PEER:
        return pki_dir / PEER_CA_CERT, pki_dir / PEER_CA_KEY
    return pki_dir / CA_CERT, pki_dir / CA_KEY


def ca_subject(name: str, role: str = CLIENT) -> str:
    """The CN of a CA of cluster `name` (tlsprobe looks for the client CA's)."""
    return f"ckeetcd peer CA {name}" if role == PEER else f"ckeetcd CA {name}"


@dataclass(frozen=True)
class Trust:
    """The CAs a daemon works with. `peer is client` in a cluster made before the
    peer CA existed (one CA for everything); otherwise two CAs."""

    client: CA
    peer: CA

    @property
    def separate(self) -> bool:
        return self.peer is not self.client


def check_ca_cert(cert: x509.Certificate, where: object) -> x509.Certificate:
    """`cert` if it is a CA certificate (basicConstraints CA:TRUE); CAError naming `where`."""
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    except ValueError as e:
        raise CAError(f"{where}: unreadable certificate extensions ({e})") from None
    if not is_ca:
        raise CAError(f"{where}: not a CA certificate (basicConstraints CA:TRUE missing)")
    return cert


def read_ca_cert(cert_path: Path) -> x509.Certificate:
    """The CA certificate; CAError when it is not a PEM CA certificate (OSError as is)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as e:
        raise CAError(f"{cert_path}: not a PEM certificate ({e})") from None
    return check_ca_cert(cert, cert_path)


def read_ca_key(key_path: Path, cert: x509.Certificate,
                cert_path: Path) -> ec.EllipticCurvePrivateKey:
    """The CA key, checked against the certificate; CAError naming both files otherwise."""
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise CAError(f"{key_path}: not an unencrypted PEM private key ({e})") from None
    except UnsupportedAlgorithm as e:
        raise CAError(f"{key_path}: unsupported key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAError(f"{key_path}: not an EC private key")
    if key.public_key() != cert.public_key():
        raise CAKeyMismatch(f"{key_path} does not belong to {cert_path}: certificates it signed "
                      "would not verify; restore the matching pair (both from the same backup "
                      "or the same `ckeetcd ca export` bundle)")
    return key


def load_ca(pki_dir: Path, role: str = CLIENT) -> CA:
    """Load and check the CA; FileNotFoundError when a file is missing, CAError when the
    files are not a CA certificate and its key."""
    cert_path, key_path = ca_paths(pki_dir, role)
    cert = read_ca_cert(cert_path)
    return CA(cert, read_ca_key(key_path, cert, cert_path), cert_path)


def _ca_cert(key: ec.EllipticCurvePrivateKey, name: str, role: str) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_subject(name, role))])
    return (
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


def create_ca(pki_dir: Path, name: str, key: ec.EllipticCurvePrivateKey | None = None,
              role: str = CLIENT) -> CA:
    """A new CA; with `key`, the certificate for a key whose certificate was never written
    (a first start that crashed in between). Never overwrites: FileExistsError when a CA
    file is already there. The key is written first, so a crash never leaves a certificate
    without its key."""
    ensure_private_dir(pki_dir)
    cert_path, key_path = ca_paths(pki_dir, role)
    if cert_path.exists():
        raise FileExistsError(errno.EEXIST, "the CA certificate exists", str(cert_path))
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
        write_new(key_path, key_pem(key), 0o600)
    cert = _ca_cert(key, name, role)
    write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    expect_key(pki_dir)
    return CA(cert, key, cert_path)


def expect_key(pki_dir: Path, expected: bool = True) -> None:
    """Record (or forget) that this host holds the CA key (see CA_KEY_EXPECTED)."""
    path = pki_dir / CA_KEY_EXPECTED
    if not expected:
        path.unlink(missing_ok=True)
    elif not path.exists():
        write_atomic(path, b"this host holds the CA key: a missing ca.key is a loss\n", 0o600)


def ensure_ca(pki_dir: Path, name: str) -> CA:
    """Load the CA, creating it when neither of its files exists. Never replaces one:
    a certificate without its key (or the reverse) is a CAError."""
    cert_path, key_path = ca_paths(pki_dir)
    have_cert, have_key = cert_path.exists(), key_path.exists()
    if have_cert and have_key:
        return load_ca(pki_dir)
    if have_cert or have_key:
        missing = key_path if have_cert else cert_path
        raise CAError(f"{missing}: missing (the CA is incomplete; a new CA would cut "
                      "off every member and client of the old one)")
    return create_ca(pki_dir, name)


# What the daemon does with the CA files it finds (ca_action).
CA_LOAD = "load"  # certificate and key: use them
CA_CREATE = "create"  # nothing yet and no cluster: make the CA
CA_FINISH = "finish"  # a key without its certificate and no cluster: a crashed first start
CA_FOLLOW = "follow"  # certificate without key on purpose (`ca import` of a --no-key bundle)
CA_MISSING = "ca_missing"  # not the bootstrapper: the CA must come by `ca import`
CA_KEY_MISSING = "ca_key_missing"  # the CA key (or the whole CA) of an existing cluster is gone
CA_CERT_MISSING = "ca_cert_missing"  # the CA certificate of an existing cluster is gone


@dataclass(frozen=True)
class CAFacts:
    """What a daemon finds in its pki dir and state dir before it starts."""

    cert: bool  # pki/ca.crt
    key: bool  # pki/ca.key
    key_expected: bool  # pki/ca.key.expected: this host held the key (created or imported)
    client_cert: bool  # pki/daemon-root.crt and .key
    election: bool
    bootstrapper: bool  # this daemon may bootstrap (no election, or it is [daemon] bootstrapper)
    cluster: tuple[str, ...] = ()  # signs that the cluster exists (data, history, a member up)


def ca_action(f: CAFacts) -> str:
    """What to do with the CA (pure; table-tested). A new CA is made only when there is no
    CA file at all, this host never had one, and nothing shows that the cluster exists: a
    CA that vanished is never replaced (every member and client trusts the old one)."""
    if f.cert and f.key:
        return CA_LOAD
    if f.cert:  # no key: a follower by design, or a loss
        if f.election and not f.key_expected:
            return CA_FOLLOW if f.client_cert else CA_MISSING
        return CA_KEY_MISSING
    if f.key:  # no certificate: a first start that crashed between the two writes?
        if f.bootstrapper and not (f.key_expected or f.client_cert or f.cluster):
            return CA_FINISH
        return CA_CERT_MISSING
    if f.key_expected or f.client_cert:  # this host had a CA
        return CA_KEY_MISSING
    if not f.bootstrapper:
        return CA_MISSING
    return CA_KEY_MISSING if f.cluster else CA_CREATE


PEER_LOAD = "load"  # peer-ca.crt and peer-ca.key: use them
PEER_CREATE = "create"  # a first start: make the peer CA beside the client CA
PEER_FINISH = "finish"  # a peer key without its certificate on a first start
PEER_FOLLOW = "follow"  # a --no-key follower: the peer CA's certificate only
PEER_ONE_CA = "one-ca"  # a cluster made before the peer CA: its peers trust ca.crt
PEER_KEY_MISSING = "ca_key_missing"  # the peer CA key of an existing cluster is gone
PEER_CERT_MISSING = "ca_cert_missing"  # the peer CA certificate is gone, its key is here
PEER_ELSEWHERE = "peer_ca_missing"  # members serve peer-CA certificates this host lacks


@dataclass(frozen=True)
class PeerFacts:
    """What decides the peer CA, after the client CA was decided (`client_action`)."""

    cert: bool  # pki/peer-ca.crt
    key: bool  # pki/peer-ca.key
    client_action: str
    bootstrapper: bool
    cluster: bool  # signs that the cluster exists (data, history, a member answering)
    served: bool = False  # a member's peer port serves a certificate of our peer CA
    rotating: bool = False  # a peer CA rotation is under way (its new CA is in next-peer/)


def peer_ca_action(f: PeerFacts) -> str:
    """What to do with the peer CA (pure; table-tested). Made only where a client CA may
    be made (a first start, by the bootstrapper); never replaced; a cluster made before it
    keeps one CA until migrated, unless its members show a peer CA this host lacks."""
    first_start = f.client_action in (CA_CREATE, CA_FINISH) or (
        f.client_action == CA_LOAD and f.bootstrapper and not f.cluster)
    if f.client_action == CA_FOLLOW:
        if f.cert:
            return PEER_FOLLOW
        return PEER_ELSEWHERE if f.served and not f.rotating else PEER_ONE_CA
    if f.cert and f.key:
        return PEER_LOAD
    if f.cert:
        return PEER_KEY_MISSING
    if f.key:
        return PEER_FINISH if first_start else PEER_CERT_MISSING
    if first_start:
        return PEER_CREATE
    # a migration under way: members show the new peer CA, which the rotation holds
    return PEER_ELSEWHERE if f.served and not f.rotating else PEER_ONE_CA

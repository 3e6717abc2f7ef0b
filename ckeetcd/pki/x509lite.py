"""Client certificates signed by the cluster CA without `cryptography.x509`.

`ckecli etcd issue` / `root-issue` must answer about as fast as `etcdctl
version`, and importing `cryptography.x509` alone costs ~25 ms. This module
writes the DER by hand: the certificate has exactly the fields and extensions
`ckeetcd.pki.CA.issue(cn, lifetime, client=True)` gives a client certificate
(basicConstraints CA:FALSE critical, keyUsage digitalSignature +
keyEncipherment critical, extendedKeyUsage clientAuth, authorityKeyIdentifier
keyid), ECDSA P-256 with SHA-256. Only the Rust-backed hazmat primitives are
imported (keys and signing; `...primitives.serialization` alone costs ~8 ms,
so the P-256 SubjectPublicKeyInfo and PKCS#8 encodings are written here too,
from the keys' public numbers). The CA certificate is read with a minimal DER
walker (its subject is copied byte for byte as the issuer); the CA key, an
unencrypted PKCS#8 P-256 key as `ckeetcd.pki` writes it, likewise, with any
other key format left to `load_pem_private_key`.

The daemon keeps using `ckeetcd.pki`; tests check that both agree.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from typing import NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

CLOCK_SKEW = dt.timedelta(minutes=5)  # as ckeetcd.pki.CLOCK_SKEW (notBefore = now - skew)

_SEQUENCE = 0x30
_SET = 0x31
_INTEGER = 0x02
_BIT_STRING = 0x03
_OCTET_STRING = 0x04
_OID = 0x06
_BOOLEAN = 0x01
_UTF8_STRING = 0x0C
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18


class DERError(ValueError):
    """Bytes that are not the DER certificate we expect."""


# --- encoding -------------------------------------------------------------------------------


def tlv(tag: int, content: bytes) -> bytes:
    """One DER TLV with a definite (short or long form) length."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def seq(*items: bytes) -> bytes:
    return tlv(_SEQUENCE, b"".join(items))


def integer(value: int) -> bytes:
    """DER INTEGER of a non-negative int (a leading 0 byte keeps it positive)."""
    if value < 0:
        raise ValueError("negative INTEGER not supported")
    return tlv(_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(_OID, bytes(body))


def encode_time(t: dt.datetime) -> bytes:
    """RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; seconds, Z."""
    t = t.astimezone(dt.timezone.utc)
    if 1950 <= t.year <= 2049:
        return tlv(_UTC_TIME, t.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(_GENERALIZED_TIME, f"{t.year:04d}{t:%m%d%H%M%S}Z".encode())


def random_serial() -> int:
    """Positive, at most 159 bits: DER content of at most 20 bytes (RFC 5280 4.1.2.2)."""
    while True:
        n = int.from_bytes(os.urandom(20), "big") >> 1
        if n:
            return n


# OIDs and fixed encodings
_ECDSA_WITH_SHA256 = seq(oid("1.2.840.10045.4.3.2"))
_P256_ALGORITHM = seq(oid("1.2.840.10045.2.1"), oid("1.2.840.10045.3.1.7"))  # id-ecPublicKey
_CN = oid("2.5.4.3")
_VERSION_3 = tlv(0xA0, integer(2))
_TRUE = tlv(_BOOLEAN, b"\xff")


class _RandomizedECDSA(ec.ECDSA):
    """`ec.ECDSA(hash)` (random k, as the default) without `ECDSA.__init__`, which imports the
    whole OpenSSL backend module (~7 ms) only to check deterministic-signing support."""

    def __init__(self, algorithm: hashes.HashAlgorithm) -> None:
        self._hash = algorithm

    @property
    def algorithm(self) -> hashes.HashAlgorithm:
        return self._hash

    @property
    def deterministic_signing(self) -> bool:
        return False


def _extension(dotted: str, critical: bool, value: bytes) -> bytes:
    return seq(oid(dotted), _TRUE if critical else b"", tlv(_OCTET_STRING, value))


def client_extensions(authority_key_id: bytes) -> bytes:
    """The extensions of a client certificate, in ckeetcd.pki.CA.issue's order."""
    return b"".join((
        _extension("2.5.29.19", True, seq()),  # basicConstraints: CA FALSE (default, omitted)
        # keyUsage: digitalSignature(0) + keyEncipherment(2) -> 101xxxxx, 5 unused bits
        _extension("2.5.29.15", True, tlv(_BIT_STRING, b"\x05\xa0")),
        _extension("2.5.29.37", False, seq(oid("1.3.6.1.5.5.7.3.2"))),  # clientAuth
        _extension("2.5.29.35", False, seq(tlv(0x80, authority_key_id))),  # [0] keyIdentifier
    ))


def common_name_rdn(common_name: str) -> bytes:
    """Name ::= CN=`common_name` as a UTF8String (as cryptography encodes it)."""
    if not common_name:
        raise ValueError("empty common name")
    return seq(tlv(_SET, seq(_CN, tlv(_UTF8_STRING, common_name.encode()))))


def _check_p256(curve: ec.EllipticCurve) -> None:
    if not isinstance(curve, ec.SECP256R1):
        raise ValueError(f"not a P-256 key: {curve.name}")


def uncompressed_point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """X9.62 uncompressed point 04 || X || Y of a P-256 key."""
    _check_p256(public_key.curve)
    n = public_key.public_numbers()
    return b"\x04" + n.x.to_bytes(32, "big") + n.y.to_bytes(32, "big")


def public_key_info(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """SubjectPublicKeyInfo DER (as `public_bytes(DER, SubjectPublicKeyInfo)`)."""
    return seq(_P256_ALGORITHM, tlv(_BIT_STRING, b"\x00" + uncompressed_point(public_key)))


def private_key_pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 DER (as `private_bytes(DER, PKCS8, NoEncryption())`): the RFC 5915
    ECPrivateKey carries the private value and the public key, the curve is in the
    AlgorithmIdentifier."""
    _check_p256(key.curve)
    d = key.private_numbers().private_value.to_bytes(32, "big")
    ec_key = seq(integer(1), tlv(_OCTET_STRING, d),
                 tlv(0xA1, tlv(_BIT_STRING, b"\x00" + uncompressed_point(key.public_key()))))
    return seq(integer(0), _P256_ALGORITHM, tlv(_OCTET_STRING, ec_key))


def key_identifier(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """SHA-1 of the subjectPublicKey BIT STRING contents (RFC 5280 4.2.1.2 method 1), as
    `x509.AuthorityKeyIdentifier.from_issuer_public_key` computes it."""
    h = hashes.Hash(hashes.SHA1())  # an identifier, not a security hash
    h.update(uncompressed_point(public_key))
    return h.finalize()


def pem(der: bytes, label: str = "CERTIFICATE") -> bytes:
    b64 = base64.b64encode(der)
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return b"".join((f"-----BEGIN {label}-----\n".encode(), b"\n".join(lines), b"\n",
                     f"-----END {label}-----\n".encode()))


# --- decoding (just enough of the CA certificate) --------------------------------------------


def _read(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the TLV at `pos`."""
    if pos + 2 > len(der):
        raise DERError("truncated DER")
    tag, first = der[pos], der[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(der):
            raise DERError("bad DER length")
        length = int.from_bytes(der[pos:pos + n], "big")
        pos += n
    if pos + length > len(der):
        raise DERError("truncated DER")
    return tag, pos, pos + length


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, TLV start, content start, end) of each element in [start, end)."""
    out = []
    pos = start
    while pos < end:
        tag, cs, ce = _read(der, pos)
        out.append((tag, pos, cs, ce))
        pos = ce
    if pos != end:
        raise DERError("element overruns its container")
    return out


def decode_time(tag: int, text: bytes) -> dt.datetime:
    s = text.decode("ascii")
    if not s.endswith("Z"):
        raise DERError(f"time {s!r} is not UTC")
    if tag == _UTC_TIME and len(s) == 13:
        yy = int(s[:2])
        year = 1900 + yy if yy >= 50 else 2000 + yy
        rest = s[2:12]
    elif tag == _GENERALIZED_TIME and len(s) == 15:
        year = int(s[:4])
        rest = s[4:14]
    else:
        raise DERError(f"unsupported time {s!r}")
    return dt.datetime(year, int(rest[0:2]), int(rest[2:4]), int(rest[4:6]), int(rest[6:8]),
                       int(rest[8:10]), tzinfo=dt.timezone.utc)


class CACert(NamedTuple):
    """What signing needs from the CA certificate."""

    pem: bytes
    der: bytes
    subject_der: bytes  # the Name TLV, copied verbatim as the issuer
    not_after: dt.datetime
    spki_der: bytes = b""  # its SubjectPublicKeyInfo TLV: the CA key must match it
    is_ca: bool = False  # basicConstraints CA:TRUE


def pem_block(pem_bytes: bytes, label: str) -> bytes:
    """DER of the first PEM block with `label`; DERError if there is none."""
    begin_line = f"-----BEGIN {label}-----".encode()
    begin = pem_bytes.find(begin_line)
    end = pem_bytes.find(f"-----END {label}-----".encode(), begin + 1)
    if begin < 0 or end < 0:
        raise DERError(f"no PEM {label} block")
    try:
        return base64.b64decode(b"".join(pem_bytes[begin + len(begin_line):end].split()),
                                validate=True)
    except ValueError as e:
        raise DERError(f"bad base64 in the PEM block: {e}") from None


def parse_ca_cert(pem_bytes: bytes) -> CACert:
    """The first PEM CERTIFICATE block; DERError (a ValueError) if it is not one."""
    der = pem_block(pem_bytes, "CERTIFICATE")
    tag, cs, ce = _read(der, 0)
    if tag != _SEQUENCE or ce != len(der):
        raise DERError("not a DER Certificate")
    cert = _children(der, cs, ce)
    if len(cert) != 3 or cert[0][0] != _SEQUENCE:
        raise DERError("not a DER Certificate")
    tbs = _children(der, cert[0][2], cert[0][3])
    if tbs and tbs[0][0] == 0xA0:  # explicit version
        tbs = tbs[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    if len(tbs) < 6 or [t[0] for t in tbs[:6]] != [_INTEGER] + [_SEQUENCE] * 5:
        raise DERError("unexpected TBSCertificate layout")
    _, _, vs, ve = tbs[3]
    validity = _children(der, vs, ve)
    if len(validity) != 2:
        raise DERError("bad Validity")
    vtag, _, ns, ne = validity[1]
    _, subject_start, _, subject_end = tbs[4]
    _, spki_start, _, spki_end = tbs[5]
    return CACert(pem=pem_bytes, der=der, subject_der=der[subject_start:subject_end],
                  not_after=decode_time(vtag, der[ns:ne]), spki_der=der[spki_start:spki_end],
                  is_ca=_basic_constraints_ca(der, tbs[6:]))


_BASIC_CONSTRAINTS = oid("2.5.29.19")


def _basic_constraints_ca(der: bytes, rest: list[tuple[int, int, int, int]]) -> bool:
    """Whether the extensions ([3] after the public key) say basicConstraints CA:TRUE."""
    for tag, _, cs, _end in rest:
        if tag != 0xA3:
            continue
        _, es, ee = _read(der, cs)
        for _, _, xs, xe in _children(der, es, ee):
            fields = _children(der, xs, xe)
            if not fields or der[fields[0][1]:fields[0][3]] != _BASIC_CONSTRAINTS:
                continue
            value = fields[-1]
            if value[0] != _OCTET_STRING:
                raise DERError("bad basicConstraints")
            _, bs, be = _read(der, value[2])
            inner = _children(der, bs, be)
            return bool(inner) and inner[0][0] == _BOOLEAN and der[inner[0][2]:inner[0][3]] \
                not in (b"", b"\x00")
    return False


# --- issuing ----------------------------------------------------------------------------------


def issue_client(ca: CACert, ca_key: ec.EllipticCurvePrivateKey, common_name: str,
                 lifetime: dt.timedelta, now: dt.datetime | None = None,
                 serial: int | None = None) -> tuple[bytes, bytes]:
    """(certificate PEM, PKCS#8 key PEM): a fresh P-256 key for CN=`common_name`, client auth,
    valid from now - CLOCK_SKEW to now + `lifetime`, signed by the CA key."""
    now = now or dt.datetime.now(dt.timezone.utc)
    serial = random_serial() if serial is None else serial
    if not 0 < serial < 1 << 159:
        raise ValueError("serial must be positive and fit in 20 DER bytes")
    key = ec.generate_private_key(ec.SECP256R1())
    spki = public_key_info(key.public_key())
    tbs = seq(
        _VERSION_3,
        integer(serial),
        _ECDSA_WITH_SHA256,
        ca.subject_der,
        seq(encode_time(now - CLOCK_SKEW), encode_time(now + lifetime)),
        common_name_rdn(common_name),
        spki,
        tlv(0xA3, seq(client_extensions(key_identifier(ca_key.public_key())))),
    )
    signature = ca_key.sign(tbs, _RandomizedECDSA(hashes.SHA256()))
    cert = seq(tbs, _ECDSA_WITH_SHA256, tlv(_BIT_STRING, b"\x00" + signature))
    return pem(cert), pem(private_key_pkcs8(key), "PRIVATE KEY")


def _p256_private_value(der: bytes) -> int:
    """The private value of an unencrypted PKCS#8 P-256 key; DERError for anything else."""
    tag, cs, ce = _read(der, 0)
    if tag != _SEQUENCE or ce != len(der):
        raise DERError("not a PKCS#8 PrivateKeyInfo")
    info = _children(der, cs, ce)
    if (len(info) < 3 or der[info[0][1]:info[0][3]] != integer(0)
            or der[info[1][1]:info[1][3]] != _P256_ALGORITHM or info[2][0] != _OCTET_STRING):
        raise DERError("not a PKCS#8 P-256 key")
    inner = der[info[2][2]:info[2][3]]
    tag, cs, ce = _read(inner, 0)
    if tag != _SEQUENCE or ce != len(inner):
        raise DERError("not an ECPrivateKey")
    fields = _children(inner, cs, ce)
    if len(fields) < 2 or inner[fields[0][1]:fields[0][3]] != integer(1) \
            or fields[1][0] != _OCTET_STRING:
        raise DERError("not an ECPrivateKey")
    return int.from_bytes(inner[fields[1][2]:fields[1][3]], "big")


def load_ca_key(pem_bytes: bytes) -> ec.EllipticCurvePrivateKey:
    """The CA's private key. An unencrypted PKCS#8 P-256 key (what ckeetcd.pki writes) is
    read here; anything else goes to `load_pem_private_key` (slower to import)."""
    try:
        return ec.derive_private_key(_p256_private_value(pem_block(pem_bytes, "PRIVATE KEY")),
                                     ec.SECP256R1())
    except ValueError:
        pass
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(pem_bytes, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an EC private key")
    return key

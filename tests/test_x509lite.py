"""ckeetcd.pki.x509lite: hand-built client certificates equal in meaning to ckeetcd.pki's."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ckeetcd.pki import CA, CLOCK_SKEW, ensure_ca, x509lite

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return ensure_ca(tmp_path_factory.mktemp("pki") / "pki", "lite")


def lite(ca: CA, cn: str, lifetime: dt.timedelta, now: dt.datetime | None = None,
         serial: int | None = None) -> tuple[x509.Certificate, bytes, bytes]:
    ca_cert = x509lite.parse_ca_cert(ca.cert_pem)
    ca_key = x509lite.load_ca_key(ca.cert_path.with_name("ca.key").read_bytes())
    cert_pem, key_pem = x509lite.issue_client(ca_cert, ca_key, cn, lifetime, now=now,
                                              serial=serial)
    return x509.load_pem_x509_certificate(cert_pem), cert_pem, key_pem


def test_same_meaning_as_pki_issue(ca: CA) -> None:
    now = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    lifetime = dt.timedelta(hours=24)
    got, _, key_pem = lite(ca, "app", lifetime, now=now)
    want = x509.load_pem_x509_certificate(ca.issue("app", lifetime, client=True, now=now).cert_pem)
    got.verify_directly_issued_by(ca.cert)
    assert got.version == x509.Version.v3
    assert got.subject == want.subject
    assert got.subject.public_bytes() == want.subject.public_bytes()
    assert got.issuer == want.issuer == ca.cert.subject
    assert got.not_valid_before_utc == want.not_valid_before_utc == now - CLOCK_SKEW
    assert got.not_valid_after_utc == want.not_valid_after_utc == now + lifetime
    assert got.signature_algorithm_oid == want.signature_algorithm_oid
    assert [(e.oid, e.critical, e.value) for e in got.extensions] == \
        [(e.oid, e.critical, e.value) for e in want.extensions]
    assert got.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value == \
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    # The DER of every extension is byte-identical to cryptography's.
    assert [e.value.public_bytes() for e in got.extensions] == \
        [e.value.public_bytes() for e in want.extensions]
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert got.public_key() == key.public_key()


def test_key_encodings_match_cryptography() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert x509lite.public_key_info(key.public_key()) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert x509lite.pem(x509lite.private_key_pkcs8(key), "PRIVATE KEY") == key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    assert x509lite.key_identifier(key.public_key()) == \
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest


def test_ca_key_loading(ca: CA, tmp_path: Path) -> None:
    pkcs8 = ca.cert_path.with_name("ca.key").read_bytes()
    assert x509lite.load_ca_key(pkcs8).private_numbers() == ca.key.private_numbers()
    sec1 = ca.key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    assert x509lite.load_ca_key(sec1).private_numbers() == ca.key.private_numbers()
    with pytest.raises(ValueError):
        x509lite.load_ca_key(b"not a key")


def test_ca_cert_parsing(ca: CA) -> None:
    parsed = x509lite.parse_ca_cert(ca.cert_pem)
    assert parsed.not_after == ca.cert.not_valid_after_utc
    assert parsed.subject_der == ca.cert.subject.public_bytes()
    assert parsed.der == ca.cert.public_bytes(serialization.Encoding.DER)
    for bad in (b"", b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
                x509lite.pem(b"\x30\x03\x02\x01\x01")):
        with pytest.raises(ValueError):
            x509lite.parse_ca_cert(bad)


def test_serials_positive_and_at_most_20_bytes(ca: CA) -> None:
    for _ in range(200):
        s = x509lite.random_serial()
        assert s > 0 and len(x509lite.integer(s)) - 2 <= 20
    cert, _, _ = lite(ca, "app", dt.timedelta(hours=1), serial=(1 << 159) - 1)
    assert cert.serial_number == (1 << 159) - 1
    cert, _, _ = lite(ca, "app", dt.timedelta(hours=1), serial=1)
    assert cert.serial_number == 1
    for bad in (0, 1 << 159):
        with pytest.raises(ValueError):
            lite(ca, "app", dt.timedelta(hours=1), serial=bad)


@pytest.mark.parametrize(("when", "tag"), [
    (dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), 0x17),
    (dt.datetime(2050, 1, 1, 0, 0, 0, tzinfo=UTC), 0x18),
    (dt.datetime(1950, 1, 1, 0, 0, 0, tzinfo=UTC), 0x17),
    (dt.datetime(1949, 12, 31, 23, 59, 59, tzinfo=UTC), 0x18),
    (dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), 0x17),
])
def test_time_encoding(when: dt.datetime, tag: int) -> None:
    der = x509lite.encode_time(when)
    assert der[0] == tag
    assert x509lite.decode_time(der[0], der[2:]) == when.replace(microsecond=0)


def test_validity_across_2050(ca: CA) -> None:
    now = dt.datetime(2049, 12, 31, 12, 0, 0, tzinfo=UTC)
    cert, _, _ = lite(ca, "late", dt.timedelta(days=1), now=now)
    assert cert.not_valid_before_utc == now - CLOCK_SKEW
    assert cert.not_valid_after_utc == dt.datetime(2050, 1, 1, 12, 0, 0, tzinfo=UTC)
    want = x509.load_pem_x509_certificate(
        ca.issue("late", dt.timedelta(days=1), client=True, now=now).cert_pem)
    got_tbs, want_tbs = cert.tbs_certificate_bytes, want.tbs_certificate_bytes
    validity = x509lite.encode_time(now - CLOCK_SKEW) + x509lite.encode_time(
        now + dt.timedelta(days=1))
    assert validity in got_tbs and validity in want_tbs


def test_utf8_common_name(ca: CA) -> None:
    cert, _, _ = lite(ca, "ünïcode-user", dt.timedelta(hours=1))
    assert cert.subject.rfc4514_string() == "CN=ünïcode-user"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_verify(ca: CA, tmp_path: Path) -> None:
    _, cert_pem, key_pem = lite(ca, "app", dt.timedelta(hours=24))
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    r = subprocess.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile",
                        str(tmp_path / "ca.crt"), str(tmp_path / "cert.pem")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "cert.pem: OK" in r.stdout, r.stderr
    pub = [subprocess.run(cmd, capture_output=True, timeout=30, check=True).stdout for cmd in (
        ["openssl", "x509", "-in", str(tmp_path / "cert.pem"), "-noout", "-pubkey"],
        ["openssl", "pkey", "-in", str(tmp_path / "key.pem"), "-pubout"])]
    assert pub[0] == pub[1]

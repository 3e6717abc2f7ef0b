"""The daemon's own certificate: when it is due, and which requests the leader signs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ckeetcd.pki import ensure_ca, not_after
from ckeetcd.pki.catransfer import CATransferError, PublicCA
from ckeetcd.tasks.daemoncert import key_of, make_request, renew_due, sign_request

DAY = dt.timedelta(days=1)
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return ensure_ca(tmp_path_factory.mktemp("pki"), "c")


@pytest.mark.parametrize("left, due", [
    (dt.timedelta(days=89), False),
    (dt.timedelta(days=31), False),
    (dt.timedelta(days=30), True),   # a third of 90 days left
    (dt.timedelta(hours=1), True),
    (-DAY, True),                     # expired already
])
def test_renewal_is_due_with_a_third_of_the_lifetime_left(ca, left, due) -> None:  # type: ignore[no-untyped-def]
    cert = ca.issue("root", dt.timedelta(days=90), now=NOW + left - dt.timedelta(days=90))
    assert renew_due(not_after(cert.cert_pem), dt.timedelta(days=90), NOW) is due


def test_a_root_request_is_signed_for_the_requesters_own_key(ca) -> None:  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    cert_pem = sign_request(ca, make_request(key), dt.timedelta(days=90))
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "root"
    assert key_of(cert_pem) == key.public_key().public_numbers()
    cert.verify_directly_issued_by(ca.cert)
    left = not_after(cert_pem) - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=89) < left <= dt.timedelta(days=90)


def request_for(name: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def test_only_root_requests_are_signed(ca) -> None:  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="only CN=root"):
        sign_request(ca, request_for("kube-apiserver", key), DAY)
    with pytest.raises(ValueError):
        sign_request(ca, b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n"
                         b"-----END CERTIFICATE REQUEST-----\n", DAY)


def test_a_daemon_without_the_ca_key_cannot_sign(ca, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    public = PublicCA.load(ca.cert_path)
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CATransferError, match="no CA key"):
        sign_request(public, make_request(key), DAY)

"""Moving the cluster CA between daemon hosts: `ckeetcd ca export` / `ca import`.

Every daemon of a cluster must trust and present certificates of the same CA.
The CA is created once, on the first node (by its daemon, or by `ca export`
run there); the file `ca export` writes goes to each other daemon host
(`scp`, a secrets store, ...) and `ca import` installs it. Files are 0600.

- With the key (default): that daemon can lead (it issues member and client
  certificates).
- `--no-key`: the file carries the CA certificate and a root client
  certificate for that daemon (`[tls] daemon_cert_lifetime`, 90 days) instead
  of the CA key; the daemon can observe and follow but never lead, since it
  cannot issue certificates. It renews that certificate itself through the
  leader, by a signing request (ckeetcd.tasks.daemoncert): no re-export needed.

The CA key never goes to member nodes: they get `ca.crt` only.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from ckeetcd.support.files import ensure_private_dir, write_atomic, write_new, write_private
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ckeetcd.pki import CA, CAError, CertKey, ca_paths, check_ca_cert, expect_key, read_ca_cert

FORMAT = "ckeetcd-ca/1"


class CATransferError(Exception):
    """The bundle cannot be exported or imported (the message says why)."""


class PublicCA(CA):
    """The CA's certificate without its key: verifies, never issues."""

    def __init__(self, cert: x509.Certificate, cert_path: Path) -> None:
        self.cert = cert
        self.cert_path = cert_path

    @property
    def key(self) -> Any:  # type: ignore[override]
        raise CATransferError("this daemon has no CA key (imported with --no-key): "
                              "it cannot issue certificates or lead")

    def issue(self, *args: Any, **kwargs: Any) -> CertKey:
        raise CATransferError("this daemon has no CA key (imported with --no-key): "
                              "it cannot issue certificates or lead")

    def sign(self, *args: Any, **kwargs: Any) -> bytes:
        raise CATransferError("this daemon has no CA key (imported with --no-key): "
                              "it cannot issue certificates or lead")

    @staticmethod
    def load(cert_path: Path) -> PublicCA:
        return PublicCA(read_ca_cert(cert_path), cert_path)


def export_bundle(ca: CA, cluster: str, with_key: bool, daemon_cert: CertKey | None) -> bytes:
    """The JSON bundle: CA certificate, and the CA key or a daemon client certificate."""
    out: dict[str, str] = {"format": FORMAT, "cluster": cluster,
                           "ca_certificate": ca.cert_pem.decode()}
    if with_key:
        out["ca_key"] = ca.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()
    elif daemon_cert is not None:
        out["daemon_certificate"] = daemon_cert.cert_pem.decode()
        out["daemon_key"] = daemon_cert.key_pem.decode()
    return (json.dumps(out, indent=2) + "\n").encode()


def parse_bundle(raw: bytes, cluster: str) -> dict[str, str]:
    """The checked bundle; CATransferError saying what is wrong with it otherwise."""
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise CATransferError(f"not a ckeetcd CA bundle (not JSON: {e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CATransferError(f"not a ckeetcd CA bundle (format is not {FORMAT})")
    if data.get("cluster") != cluster:
        raise CATransferError(f"bundle is for cluster {data.get('cluster')!r}, "
                              f"this config is for {cluster!r}")
    fields = ("ca_certificate", "ca_key", "daemon_certificate", "daemon_key")
    if not isinstance(data.get("ca_certificate"), str) or any(
            not isinstance(data[k], str) for k in fields if k in data):
        raise CATransferError("not a ckeetcd CA bundle (ca_certificate missing, or a PEM "
                              "field that is not a string)")
    try:
        cert = check_ca_cert(x509.load_pem_x509_certificate(data["ca_certificate"].encode()),
                             "the bundle's ca_certificate")
    except CAError as e:
        raise CATransferError(str(e)) from None
    except ValueError as e:
        raise CATransferError(f"the bundle's ca_certificate is not a PEM certificate ({e})") \
            from None
    if "ca_key" in data:
        try:
            key = serialization.load_pem_private_key(data["ca_key"].encode(), password=None)
        except (ValueError, TypeError) as e:
            raise CATransferError(f"the bundle's ca_key is not a PEM private key ({e})") \
                from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() \
                != cert.public_key():
            raise CATransferError("the bundle's CA key does not belong to its certificate")
    elif not ("daemon_certificate" in data and "daemon_key" in data):
        raise CATransferError("the bundle has neither the CA key nor a daemon certificate")
    else:
        try:
            dcert = x509.load_pem_x509_certificate(data["daemon_certificate"].encode())
            dkey = serialization.load_pem_private_key(data["daemon_key"].encode(),
                                                      password=None)
        except (ValueError, TypeError) as e:
            raise CATransferError(f"the bundle's daemon certificate or key is not PEM ({e})") \
                from None
        try:
            dcert.verify_directly_issued_by(cert)
        except Exception:  # ValueError, TypeError, InvalidSignature
            raise CATransferError("the bundle's daemon certificate is not signed by its CA") \
                from None
        if dkey.public_key() != dcert.public_key():
            raise CATransferError("the bundle's daemon key does not belong to its certificate")
    return {k: str(v) for k, v in data.items()}


class DifferentCA(CATransferError):
    """This host already has another CA (or another CA key): replacing needs --force."""


def import_bundle(data: dict[str, str], pki_dir: Path, daemon_cert: Path, daemon_key: Path,
                  force: bool = False) -> str:
    """Install the bundle; refuses (DifferentCA) to replace a different CA or CA key unless
    `force`. Without `force` no CA file is ever overwritten: missing ones are created
    (O_EXCL-style), identical ones left as they are. Returns what was installed."""
    cert_path, key_path = ca_paths(pki_dir)
    new_cert = data["ca_certificate"].encode()
    old_cert = cert_path.read_bytes() if cert_path.exists() else None
    same_cert = old_cert is not None and old_cert.strip() == new_cert.strip()
    if old_cert is not None and not same_cert and not force:
        raise DifferentCA(f"{cert_path} holds a different CA; replacing it would cut this "
                          "daemon off the cluster (use --force if that is what you want)")
    new_key = data["ca_key"].encode() if "ca_key" in data else None
    if new_key is not None and key_path.exists() and not force and \
            key_path.read_bytes().strip() != new_key.strip():
        raise DifferentCA(f"{key_path} holds a different key than the bundle's; replacing it "
                          "needs --force")
    ensure_private_dir(pki_dir)
    if new_key is not None:
        _install(key_path, new_key, 0o600, force)
        _install(cert_path, new_cert, 0o644, force)
        expect_key(pki_dir)
        return "CA certificate and key (this daemon can lead)"
    if key_path.exists() and force:
        key_path.unlink()
    _install(cert_path, new_cert, 0o644, force)
    if not key_path.exists():
        expect_key(pki_dir, False)  # following without the key is now intended
    write_private(daemon_key, data["daemon_key"].encode())
    write_atomic(daemon_cert, data["daemon_certificate"].encode())
    return "CA certificate and a daemon client certificate (this daemon can follow, not lead)"


def _install(path: Path, content: bytes, mode: int, force: bool) -> None:
    """Write a CA file: replace it only when forced; a missing one is created exclusively,
    an identical one kept."""
    if force:
        write_atomic(path, content, mode)
        return
    with contextlib.suppress(FileExistsError):  # checked identical by import_bundle
        write_new(path, content, mode)

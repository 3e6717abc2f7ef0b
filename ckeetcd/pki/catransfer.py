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

While a CA rotation runs, the export (with the key) also carries the rotation's new
CA with its key (`next_ca_*` for the client CA, `next_peer_ca_*`), made in the pki
dir of the leader that took the new-ca step; `ca import` puts it into
`next-<role>/`, so that daemon can lead the rotation on (ckeetcd.core.carotation
holds without it). This is the only way that key leaves its host: never etcd.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ckeetcd.pki import (
    CA,
    CLIENT,
    PEER,
    CAError,
    CertKey,
    Trust,
    ca_paths,
    check_ca_cert,
    expect_key,
    read_ca_cert,
)
from ckeetcd.support.files import ensure_private_dir, write_atomic, write_new, write_private

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


def _key_text(ca: CA) -> str:
    return ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()


NEXT_FIELDS = {CLIENT: ("next_ca_certificate", "next_ca_key"),
               PEER: ("next_peer_ca_certificate", "next_peer_ca_key")}


def export_bundle(trust: Trust, cluster: str, with_key: bool,
                  daemon_cert: CertKey | None,
                  next_cas: dict[str, CA] | None = None) -> bytes:
    """The JSON bundle: the CA certificates (client, and peer when the cluster has its
    own), and the CA keys (with a rotation's new CAs `next_cas`) or a daemon client
    certificate."""
    ca = trust.client
    out: dict[str, str] = {"format": FORMAT, "cluster": cluster,
                           "ca_certificate": ca.cert_pem.decode()}
    if trust.separate:
        out["peer_ca_certificate"] = trust.peer.cert_pem.decode()
    if with_key:
        out["ca_key"] = _key_text(ca)
        if trust.separate:
            out["peer_ca_key"] = _key_text(trust.peer)
        for role, new in (next_cas or {}).items():
            cert_field, key_field = NEXT_FIELDS[role]
            out[cert_field], out[key_field] = new.cert_pem.decode(), _key_text(new)
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
    fields = ("ca_certificate", "ca_key", "daemon_certificate", "daemon_key",
              "peer_ca_certificate", "peer_ca_key",
              *(f for pair in NEXT_FIELDS.values() for f in pair))
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
    _check_peer(data)
    _check_next(data)
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


def _check_peer(data: dict[str, Any]) -> None:
    """The peer CA fields: a CA certificate, and its key exactly when the CA key is there."""
    if "peer_ca_certificate" not in data:
        if "peer_ca_key" in data:
            raise CATransferError("the bundle has a peer CA key without its certificate")
        return
    try:
        cert = check_ca_cert(x509.load_pem_x509_certificate(
            data["peer_ca_certificate"].encode()), "the bundle's peer_ca_certificate")
    except CAError as e:
        raise CATransferError(str(e)) from None
    except ValueError as e:
        raise CATransferError(f"the bundle's peer_ca_certificate is not a PEM certificate "
                              f"({e})") from None
    if ("peer_ca_key" in data) != ("ca_key" in data):
        raise CATransferError("the bundle carries one CA key without the other (ca_key and "
                              "peer_ca_key go together)")
    if "peer_ca_key" in data:
        try:
            key = serialization.load_pem_private_key(data["peer_ca_key"].encode(),
                                                     password=None)
        except (ValueError, TypeError) as e:
            raise CATransferError(f"the bundle's peer_ca_key is not a PEM private key ({e})") \
                from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() \
                != cert.public_key():
            raise CATransferError("the bundle's peer CA key does not belong to its certificate")


def _check_next(data: dict[str, Any]) -> None:
    """A rotation's new CA: certificate and key together, matching, next to the CA key."""
    for role, (cert_field, key_field) in NEXT_FIELDS.items():
        if (cert_field in data) != (key_field in data):
            raise CATransferError(f"the bundle has one of {cert_field} and {key_field} "
                                  "without the other")
        if cert_field not in data:
            continue
        if "ca_key" not in data:
            raise CATransferError(f"the bundle has {key_field} but not the CA key")
        try:
            cert = check_ca_cert(x509.load_pem_x509_certificate(data[cert_field].encode()),
                                 f"the bundle's {cert_field}")
            key = serialization.load_pem_private_key(data[key_field].encode(), password=None)
        except CAError as e:
            raise CATransferError(str(e)) from None
        except (ValueError, TypeError) as e:
            raise CATransferError(f"the bundle's new {role} CA is not PEM ({e})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() \
                != cert.public_key():
            raise CATransferError(f"the bundle's {key_field} does not belong to its "
                                  "certificate")


class DifferentCA(CATransferError):
    """This host already has another CA (or another CA key): replacing needs --force."""


def import_bundle(data: dict[str, str], pki_dir: Path, daemon_cert: Path, daemon_key: Path,
                  force: bool = False) -> str:
    """Install the bundle; refuses (DifferentCA) to replace a different CA or CA key unless
    `force`. Without `force` no CA file is ever overwritten: missing ones are created
    (O_EXCL-style), identical ones left as they are. Returns what was installed."""
    _refuse_different(data, pki_dir, force)
    _refuse_different(data, pki_dir, force, PEER)
    cert_path, key_path = ca_paths(pki_dir)
    new_cert = data["ca_certificate"].encode()
    new_key = data["ca_key"].encode() if "ca_key" in data else None
    ensure_private_dir(pki_dir)
    peer_cert_path, peer_key_path = ca_paths(pki_dir, PEER)
    if new_key is not None:
        if "peer_ca_key" in data:
            _install(peer_key_path, data["peer_ca_key"].encode(), 0o600, force)
            _install(peer_cert_path, data["peer_ca_certificate"].encode(), 0o644, force)
        _install(key_path, new_key, 0o600, force)
        _install(cert_path, new_cert, 0o644, force)
        expect_key(pki_dir)
        rotating = _install_next(data, pki_dir, force)
        return "CA certificate and key (this daemon can lead)" + (
            f", and the new {' and '.join(rotating)} CA of the rotation under way"
            if rotating else "")
    if key_path.exists() and force:
        key_path.unlink()
    if peer_key_path.exists() and force:
        peer_key_path.unlink()
    if "peer_ca_certificate" in data:
        _install(peer_cert_path, data["peer_ca_certificate"].encode(), 0o644, force)
    _install(cert_path, new_cert, 0o644, force)
    if not key_path.exists():
        expect_key(pki_dir, False)  # following without the key is now intended
    write_private(daemon_key, data["daemon_key"].encode())
    write_atomic(daemon_cert, data["daemon_certificate"].encode())
    return "CA certificate and a daemon client certificate (this daemon can follow, not lead)"


def _refuse_different(data: dict[str, str], pki_dir: Path, force: bool,
                      role: str = CLIENT) -> None:
    """DifferentCA when this host holds another CA (or CA key) of `role` than the bundle."""
    prefix = "peer_" if role == PEER else ""
    cert_path, key_path = ca_paths(pki_dir, role)
    if force or f"{prefix}ca_certificate" not in data:
        return
    new_cert = data[f"{prefix}ca_certificate"].encode()
    if cert_path.exists() and cert_path.read_bytes().strip() != new_cert.strip():
        raise DifferentCA(f"{cert_path} holds a different CA; replacing it would cut this "
                          "daemon off the cluster (use --force if that is what you want)")
    new_key = data.get(f"{prefix}ca_key")
    if new_key is not None and key_path.exists() and \
            key_path.read_bytes().strip() != new_key.encode().strip():
        raise DifferentCA(f"{key_path} holds a different key than the bundle's; replacing it "
                          "needs --force")


def _install_next(data: dict[str, str], pki_dir: Path, force: bool) -> list[str]:
    """The rotation's new CAs into next-<role>/ (ckeetcd.pki.rotationfiles); the roles."""
    from ckeetcd.pki.rotationfiles import RotationError, install_next

    roles = []
    for role, (cert_field, key_field) in NEXT_FIELDS.items():
        if cert_field in data:
            try:
                install_next(pki_dir, role, data[cert_field].encode(),
                             data[key_field].encode(), force)
            except RotationError as e:
                raise DifferentCA(str(e)) from None
            roles.append(role)
    return roles


def _install(path: Path, content: bytes, mode: int, force: bool) -> None:
    """Write a CA file: replace it only when forced; a missing one is created exclusively,
    an identical one kept."""
    if force:
        write_atomic(path, content, mode)
        return
    with contextlib.suppress(FileExistsError):  # checked identical by import_bundle
        write_new(path, content, mode)

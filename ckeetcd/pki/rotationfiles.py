"""The files of a CA rotation (ckeetcd.core.carotation decides; this reads and writes).

In the pki dir, per role:

- `rotation-<role>.json`: the record (`Record`, plus both CAs' certificates as PEM,
  public) — written atomically, kept after the rotation is done: a rotated
  role's members keep bundle-named trust files, and the next rotation reads
  its "old" CA from it;
- `next-<role>/`: the new CA while the rotation runs, made by `create_ca` (key
  first, never overwritten), so a daemon killed while making it loads it again;
- `client-bundle.crt` (client CA only): old + new CA, written once every member
  trusts both; while it is here the daemon verifies servers with it and
  `ckecli etcd issue` hands it out as `ca_certificate` (the servers' certificates
  come from either CA then);
- at the finish, its files replace `peer-ca.*` (or `ca.*`): the old key is gone.
  `settle` completes a finish a killed daemon left half done; the daemon calls
  it before it loads its CAs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ckeetcd.core.carotation import CLIENT, PEER, ROLES, Record, fingerprint
from ckeetcd.pki.authority import CA, CAError, ca_paths, create_ca, load_ca
from ckeetcd.pki.members import issued_by
from ckeetcd.support.files import ensure_private_dir, write_atomic


class RotationError(CAError):
    """A rotation record that cannot be read; the message names the file."""


@dataclass(frozen=True)
class Rotation:
    """A record and the CA certificates it names."""

    record: Record
    old_pem: bytes
    new_pem: bytes = b""

    def pem_of(self, fp: str) -> bytes:
        return self.old_pem if fp == self.record.old else self.new_pem if fp == \
            self.record.new else b""

    def bundle(self, trust: frozenset[str]) -> bytes:
        """The PEM bundle of the CAs in `trust`, old first."""
        return b"".join(self.pem_of(fp) for fp in (self.record.old, self.record.new)
                        if fp in trust)


def record_path(pki_dir: Path, role: str) -> Path:
    return pki_dir / f"rotation-{role}.json"


def next_dir(pki_dir: Path, role: str) -> Path:
    return pki_dir / f"next-{role}"


CLIENT_BUNDLE = "client-bundle.crt"


def client_bundle_path(pki_dir: Path) -> Path:
    return pki_dir / CLIENT_BUNDLE


def server_trust_file(pki_dir: Path) -> Path:
    """The CA file a client of the members verifies their server certificates with: the
    client rotation's bundle while it is here, else ca.crt."""
    bundle = client_bundle_path(pki_dir)
    return bundle if bundle.exists() else pki_dir / "ca.crt"


def write_client_bundle(pki_dir: Path, rotation: Rotation) -> bool:
    """Write the old + new client CA bundle (idempotent); whether it was written now."""
    want = rotation.bundle(frozenset({rotation.record.old, rotation.record.new}))
    path = client_bundle_path(pki_dir)
    if path.exists() and path.read_bytes() == want:
        return False
    write_atomic(path, want, 0o644)
    return True


def cert_fingerprint(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def decode_rotation(raw: bytes | str, role: str, where: str) -> Rotation:
    """A record as written by `encode_rotation` (the file's and etcd's format);
    RotationError naming `where` when it is not one, or not of `role`."""
    try:
        data = json.loads(raw)
        pems = data.pop("old_pem").encode(), data.pop("new_pem", "").encode()
        record = Record(**data)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise RotationError(f"{where}: not a rotation record ({e})") from None
    if record.role != role:
        raise RotationError(f"{where}: records a {record.role} rotation, not {role}")
    return Rotation(record, *pems)


def encode_rotation(rotation: Rotation) -> bytes:
    """The record with both CAs' certificates (public only: never a key)."""
    data = {**asdict(rotation.record), "old_pem": rotation.old_pem.decode(),
            "new_pem": rotation.new_pem.decode()}
    return json.dumps(data, indent=1).encode()


def read_rotation(pki_dir: Path, role: str) -> Rotation | None:
    """The record of `role` (None: never rotated); RotationError when unreadable."""
    path = record_path(pki_dir, role)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RotationError(f"{path}: not a rotation record ({e})") from None
    return decode_rotation(raw, role, str(path))


def read_rotations(pki_dir: Path) -> dict[str, Rotation]:
    return {role: r for role in ROLES if (r := read_rotation(pki_dir, role)) is not None}


def write_rotation(pki_dir: Path, rotation: Rotation) -> None:
    write_atomic(record_path(pki_dir, rotation.record.role), encode_rotation(rotation), 0o600)


def new_rotation(role: str, current_pem: bytes, migration: bool,
                 now: float | None = None) -> Rotation:
    """A new record: the CA of `role` in use now becomes the old one."""
    return Rotation(Record(role=role, old=cert_fingerprint(current_pem),
                           started=time.time() if now is None else now,
                           migration=migration), current_pem)


def start_rotation(pki_dir: Path, role: str, current_pem: bytes, migration: bool,
                   now: float | None = None) -> Rotation:
    """A new record, written to the pki dir."""
    rotation = new_rotation(role, current_pem, migration, now)
    write_rotation(pki_dir, rotation)
    return rotation


def make_next(pki_dir: Path, cluster: str, rotation: Rotation) -> tuple[CA, Rotation]:
    """The new CA (made, or loaded when a killed daemon made it already), and the
    record naming it."""
    role = rotation.record.role
    d = next_dir(pki_dir, role)
    cert_path, key_path = ca_paths(d, role)
    if rotation.record.new:  # named (and perhaps in use) already: only ever that one
        ca = load_ca(d, role)
        if cert_fingerprint(ca.cert_pem) != rotation.record.new:
            raise RotationError(f"{cert_path}: not the new {role} CA the rotation record "
                                f"names ({rotation.record.new}): a stale copy")
        return ca, rotation
    if cert_path.exists():
        ca = load_ca(d, role)
    else:  # with a key alone, a kill fell between create_ca's two writes: finish it
        ca = create_ca(d, cluster, key=_bare_key(key_path) if key_path.exists() else None,
                       role=role)
    new_pem = ca.cert_pem
    if rotation.record.new != cert_fingerprint(new_pem):
        rotation = replace(rotation, record=replace(rotation.record,
                                                    new=cert_fingerprint(new_pem)),
                           new_pem=new_pem)
        write_rotation(pki_dir, rotation)
    return ca, rotation


def signer_of(cert_pem: bytes | None, rotation: Rotation) -> str:
    """The fingerprint of the rotation's CA (new or old) that signed `cert_pem` ("": neither)."""
    for fp, pem in ((rotation.record.new, rotation.new_pem),
                    (rotation.record.old, rotation.old_pem)):
        if fp and issued_by(cert_pem, pem):
            return fp
    return ""


def peer_pem_for(peer_crt: bytes | None, rotation: Rotation | None,
                 current: bytes | None) -> bytes | None:
    """The CA a member's installed peer certificate must come from (member_tls_problem's
    `peer_ca_pem`): during a peer rotation the old one (None: the one CA of a
    migration) or the new one, whichever signed it; else the peer CA in place."""
    if rotation is None or rotation.record.done:
        return current
    fp = signer_of(peer_crt, rotation)
    if fp and fp == rotation.record.old:
        return None if rotation.record.migration else rotation.old_pem
    if fp and fp == rotation.record.new:
        return rotation.new_pem
    return current


def ca_pem_for(cert: bytes | None, rotation: Rotation | None, current: bytes) -> bytes:
    """The ca.crt a member's tls dir must hold next to `cert` (its server.crt): during a
    client rotation the CA that signed it (old or new), else the client CA in place."""
    if rotation is None or rotation.record.done:
        return current
    fp = signer_of(cert, rotation)
    return rotation.pem_of(fp) if fp else current


def follow_finish(pki_dir: Path, rotation: Rotation) -> str:
    """On a daemon that did not run the finish (a follower), make its CA files of the
    role the new CA's once the record says done: with the new CA's key here as the
    finish does ("key"); without any key of the role (a `--no-key` follower) the new
    certificate alone ("certificate"); "" when nothing is to do; "key-missing" when this
    host holds the old CA's key but not the new one's (it keeps the old files and the
    client bundle, and must not lead until the operator copies the new CA here)."""
    r = rotation.record
    if not r.done or not r.new or not rotation.new_pem:
        return ""
    cert_path, key_path = ca_paths(pki_dir, r.role)
    try:
        if cert_fingerprint(cert_path.read_bytes()) == r.new:
            return ""
    except (OSError, ValueError):
        pass
    if new_ca_here(pki_dir, rotation, key=True):
        finish(pki_dir, replace(rotation, record=replace(r, done=False)))
        return "key"
    if key_path.exists():
        return "key-missing"
    write_atomic(cert_path, rotation.new_pem, 0o644)
    if r.role == CLIENT:
        client_bundle_path(pki_dir).unlink(missing_ok=True)
    return "certificate"


def new_ca_here(pki_dir: Path, rotation: Rotation, key: bool = False) -> bool:
    """The rotation's new CA is here: in the next dir, or (a finish under way) in place;
    with `key`, its private key too (what the steps past new-ca need)."""
    role, new = rotation.record.role, rotation.record.new
    if not new:
        return False
    for d in (next_dir(pki_dir, role), pki_dir):
        cert, key_path = ca_paths(d, role)
        try:
            if cert_fingerprint(cert.read_bytes()) == new and (not key or key_path.exists()):
                return True
        except (OSError, ValueError):
            continue
    return False


def install_next(pki_dir: Path, role: str, cert_pem: bytes, key_pem: bytes,
                 force: bool = False) -> bool:
    """Put a rotation's new CA (from `ca export`) into next-<role>/ (key first, 0600);
    whether anything was written. A different one there is replaced only with `force`."""
    d = next_dir(pki_dir, role)
    cert_path, key_path = ca_paths(d, role)
    if cert_path.exists() and key_path.exists() and cert_path.read_bytes().strip() == \
            cert_pem.strip() and key_path.read_bytes().strip() == key_pem.strip():
        return False
    if (cert_path.exists() or key_path.exists()) and not force:
        raise RotationError(f"{d} holds another new {role} CA than the bundle's; replacing "
                            "it needs --force")
    ensure_private_dir(d)
    write_atomic(key_path, key_pem, 0o600)
    write_atomic(cert_path, cert_pem, 0o644)
    return True


def _bare_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAError(f"{path}: not an EC private key")
    return key


def load_next(pki_dir: Path, rotation: Rotation) -> CA | None:
    """The new CA with its key (None: not here, e.g. a --no-key follower)."""
    role = rotation.record.role
    d = next_dir(pki_dir, role)
    try:
        return load_ca(d, role)
    except FileNotFoundError:
        return None


def finish(pki_dir: Path, rotation: Rotation) -> Rotation:
    """The new CA's files replace the role's CA files (key first), the next dir goes,
    and the record says done. Idempotent: a second call completes a first one."""
    role = rotation.record.role
    d = next_dir(pki_dir, role)
    (src_cert, src_key), (dst_cert, dst_key) = ca_paths(d, role), ca_paths(pki_dir, role)
    if src_key.exists():
        os.replace(src_key, dst_key)
    if src_cert.exists():
        os.replace(src_cert, dst_cert)
    if role == CLIENT:
        client_bundle_path(pki_dir).unlink(missing_ok=True)
    if d.exists():
        for leftover in d.iterdir():
            leftover.unlink()
        d.rmdir()
    done = replace(rotation, record=replace(rotation.record, done=True))
    write_rotation(pki_dir, done)
    return done


def settle(pki_dir: Path) -> list[str]:
    """Complete finishes a killed daemon left half done (a role whose CA files are the
    new CA's key, or missing, while the next dir still holds the rest); the roles it
    completed."""
    out = []
    for role, rotation in read_rotations(pki_dir).items():
        if rotation.record.done:
            continue
        d = next_dir(pki_dir, role)
        src_cert, src_key = ca_paths(d, role)
        dst_cert, _ = ca_paths(pki_dir, role)
        half = not src_key.exists() and (src_cert.exists() or (
            dst_cert.exists() and cert_fingerprint(dst_cert.read_bytes()) == rotation.record.new))
        if half:
            finish(pki_dir, rotation)
            out.append(role)
    return out


__all__ = [
    "CLIENT",
    "CLIENT_BUNDLE",
    "PEER",
    "Rotation",
    "RotationError",
    "ca_pem_for",
    "cert_fingerprint",
    "client_bundle_path",
    "decode_rotation",
    "encode_rotation",
    "finish",
    "follow_finish",
    "install_next",
    "load_next",
    "make_next",
    "new_ca_here",
    "new_rotation",
    "next_dir",
    "peer_pem_for",
    "read_rotation",
    "read_rotations",
    "record_path",
    "server_trust_file",
    "settle",
    "signer_of",
    "start_rotation",
    "write_client_bundle",
    "write_rotation",
]

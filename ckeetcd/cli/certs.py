"""`ckecli etcd root-issue` and `ckecli etcd issue`: client certificates.

Signed locally with the cluster CA (`<state_dir>/pki/ca.{crt,key}`), so the
caller needs read access to the CA key; etcd itself is never contacted. With
client-certificate auth etcd takes the user name from the CN. During a client
CA rotation, once every member trusts the new CA (the daemon has written
`pki/client-bundle.crt`), certificates come from the new CA and
`ca_certificate` is that bundle (old + new): it verifies the servers whichever
CA signed theirs at the moment. The
certificate comes from `pki.CA.issue`, the issuer the daemon uses for its own
client certificates, so there is one way a certificate is made.

Output (CKE-compatible): `-output=json` prints one object with exactly
`ca_certificate`, `certificate` and `private_key` (PEM strings);
`-output=file` writes `etcd-ca.crt`, `etcd-USER.crt` and `etcd-USER.key`
(0600) in the current directory.

Exit status: 0 done, 1 could not sign or write (e.g. the CA key is not
readable), 2 bad usage (nothing is read or written).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ckeetcd.cli.common import load
from ckeetcd.cli.errors import UsageError
from ckeetcd.core.config import NAME_RE, Config
from ckeetcd.core.durations import DurationError, format_duration, parse_ttl
from ckeetcd.core.textcheck import show

if TYPE_CHECKING:

    from ckeetcd.pki import CA, CertKey

ROOT = "root"
ROOT_LIFETIME = dt.timedelta(hours=2)
CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"


class CommandFailed(Exception):
    """The command could not do its job (exit status 1); the message says why."""


def fail(e: CommandFailed) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 1


def check_user_name(name: str, arg: str = "USER") -> None:
    """A name etcd can hold as a user and that is safe as a file name; else UsageError."""
    if not name:
        raise UsageError(f"{arg}: must not be empty")
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"{arg}: {show(name)} is not a valid etcd user name (letters, digits, "
                         "'.', '_', '-'; starts with a letter or digit; at most 63 characters)")


@contextmanager
def _reading_ca(config: Config) -> Iterator[None]:
    """Turn a missing, unreadable or unusable CA into CommandFailed naming the file."""
    from cryptography.exceptions import UnsupportedAlgorithm

    d = config.cluster.pki_dir
    try:
        yield
    except FileNotFoundError as e:
        raise CommandFailed(
            f"{e.filename}: no such file; the CA is created by `ckeetcd run` on first start "
            f"(cluster.state_dir = {config.cluster.state_dir} in {config.path})"
        ) from None
    except PermissionError as e:
        raise CommandFailed(
            f"{e.filename}: permission denied; signing needs read access to the CA "
            "(run as the user that runs the ckeetcd daemon, or as root)"
        ) from None
    except OSError as e:
        raise CommandFailed(f"{e.filename or d}: cannot read: {e.strerror or e}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        if str(d) in str(e):  # names its file already (ckeetcd.pki.CAError)
            raise CommandFailed(str(e)) from None
        raise CommandFailed(f"{d / CA_CERT_FILE}, {d / CA_KEY_FILE}: not a usable CA: {e}") \
            from None


def load_signing_ca(config: Config) -> CA:
    """The cluster CA with its private key; CommandFailed naming the file otherwise."""
    from ckeetcd.pki import load_ca

    with _reading_ca(config):
        return load_ca(config.cluster.pki_dir)


def signing_ca_and_trust(config: Config) -> tuple[CA, bytes]:
    """The CA that signs client certificates now and the `ca_certificate` to hand out:
    the client rotation's new CA and its old + new bundle while the bundle is in force,
    else the cluster CA and its certificate."""
    from ckeetcd.pki.rotationfiles import CLIENT, client_bundle_path, load_next, read_rotation

    d = config.cluster.pki_dir
    bundle = client_bundle_path(d)
    with _reading_ca(config):
        rotation = read_rotation(d, CLIENT) if bundle.exists() else None
        if rotation is not None and not rotation.record.done:
            new = load_next(d, rotation)
            if new is not None:
                return new, bundle.read_bytes()
    ca = load_signing_ca(config)
    return ca, ca.cert_pem


def load_signing_peer_ca(config: Config) -> CA | None:
    """The cluster's own peer CA with its key; None for a cluster with one CA."""
    from ckeetcd.pki import PEER, PEER_CA_CERT, load_ca

    if not (config.cluster.pki_dir / PEER_CA_CERT).exists():
        return None
    with _reading_ca(config):
        return load_ca(config.cluster.pki_dir, PEER)


def sign(ca: CA, user: str, lifetime: dt.timedelta) -> CertKey:
    """A client certificate with CN=`user` valid for `lifetime` from now (a fresh key);
    a warning on stderr when it would outlive the CA."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_not_after = ca.cert.not_valid_after_utc
    if now + lifetime > ca_not_after:
        print(f"warning: the certificate outlives the CA, which expires {ca_not_after:%Y-%m-%d}; "
              "it stops working then", file=sys.stderr)
    return ca.issue(user, lifetime, client=True, now=now)


def emit(ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str, output: str) -> None:
    """Print the JSON object, or write the three files in the current directory."""
    if output == "json":
        print(json.dumps({
            "ca_certificate": ca_pem.decode(),
            "certificate": cert_pem.decode(),
            "private_key": key_pem.decode(),
        }, indent=2))
        return
    from ckeetcd.support.files import write_atomic, write_private

    cwd = Path.cwd()
    names = ("etcd-ca.crt", f"etcd-{user}.crt", f"etcd-{user}.key")
    try:
        write_atomic(cwd / names[0], ca_pem, 0o644)
        write_atomic(cwd / names[1], cert_pem, 0o644)
        write_private(cwd / names[2], key_pem)
    except OSError as e:
        raise CommandFailed(f"{e.filename or cwd}: cannot write: {e.strerror or e}") from None
    print("cert files:", *names)


def _issue(args: argparse.Namespace, user: str, lifetime: dt.timedelta) -> int:
    config = load(args)
    try:
        ca, trust = signing_ca_and_trust(config)
        pair = sign(ca, user, lifetime)
        emit(trust, pair.cert_pem, pair.key_pem, user, args.output)
    except CommandFailed as e:
        return fail(e)
    return 0


def root_issue(args: argparse.Namespace) -> int:
    """`root-issue`: a certificate for etcd's root user, valid 2 hours."""
    return _issue(args, ROOT, ROOT_LIFETIME)


def issue(args: argparse.Namespace) -> int:
    """`issue [-ttl=DUR] USER`: a certificate for USER, default 87600h."""
    check_user_name(args.user)
    if args.user == ROOT:
        raise UsageError("USER: certificates for 'root' come from `root-issue` "
                         f"(valid {format_duration(ROOT_LIFETIME)})")
    try:
        lifetime = parse_ttl(args.ttl, "-ttl")
    except DurationError as e:
        raise UsageError(str(e)) from None
    return _issue(args, args.user, lifetime)

"""Each daemon's own root client certificate, renewed while the daemon runs.

A daemon talks to etcd with a root client certificate (`pki/daemon-root.*`,
`[tls] daemon_cert_lifetime`, default 90 days). A daemon may run far longer
than that, so the certificate is renewed in place once a third of its life is
left, and the etcd channels are re-made with it:

- with the CA key: issued here;
- without it (a `--no-key` bundle, a follower that can never lead): the
  daemon makes a new key, kept beside the old one in `daemon-root.key.pending`
  (0600: a restart does not lose it), and puts a certificate signing request
  for CN=root under `/ckeetcd/csr/<daemon id>`, authenticated by its still
  valid certificate. The leader signs the requests it finds there and puts the
  certificate under `/ckeetcd/certs/<daemon id>`; the daemon installs it once
  it matches its pending key and deletes both keys. The private key never
  leaves the daemon's host. Only root may write under `/ckeetcd/`, and root
  could grant itself anything anyway, so signing such requests gives nobody
  more than they have. That is why no user prefix may reach `/ckeetcd/`
  (config validation and `ckecli etcd user-add` refuse it): a user granted
  it by hand (etcdctl) could have the leader sign a root certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ckeetcd.core.carotation import CLIENT
from ckeetcd.core.config import Config
from ckeetcd.core.model import Desired, Observed
from ckeetcd.core.rotationplan import role_facts, signer_new
from ckeetcd.etcd import ClientPool, EtcdError
from ckeetcd.pki import CA, TLSFiles, key_pem, not_after
from ckeetcd.pki.catransfer import PublicCA
from ckeetcd.pki.members import issued_by
from ckeetcd.pki.rotationfiles import load_next, read_rotation, server_trust_file, signer_of
from ckeetcd.support.files import write_atomic, write_private

ROOT = "root"
CSR_PREFIX = b"/ckeetcd/csr/"
CERT_PREFIX = b"/ckeetcd/certs/"
PENDING_SUFFIX = ".pending"
SIGN_EVERY = 5.0  # seconds between the leader's looks for requests


def daemon_tls(config: Config) -> TLSFiles:
    """The daemon's root client files; servers are verified with the client CA rotation's
    bundle while one runs (ckeetcd.pki.rotationfiles.server_trust_file)."""
    d = config.cluster.pki_dir
    return TLSFiles(ca=server_trust_file(d), cert=d / "daemon-root.crt", key=d / "daemon-root.key")


def renew_due(expires: dt.datetime, lifetime: dt.timedelta, now: dt.datetime) -> bool:
    """A third of `lifetime` or less left (or expired)."""
    return expires - now <= lifetime / 3


def make_request(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A CSR (PEM) for CN=root, signed by `key`."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ROOT)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def sign_request(ca: CA, csr_pem: bytes, lifetime: dt.timedelta) -> bytes:
    """The certificate for a daemon's CSR; ValueError when it is not one we sign."""
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise ValueError("the request's signature does not match its key")
    names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [ROOT]:
        raise ValueError(f"the request is for {names}, only CN={ROOT} is signed")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the request's key is not an EC key")
    return ca.sign(ROOT, key, lifetime)


def key_of(pem: bytes) -> ec.EllipticCurvePublicNumbers | None:
    """The EC public key of a certificate or a CSR (None: neither, or not EC)."""
    try:
        public = (x509.load_pem_x509_certificate(pem) if b"CERTIFICATE-----" in pem[:40]
                  else x509.load_pem_x509_csr(pem)).public_key()
    except ValueError:
        return None
    return public.public_numbers() if isinstance(public, ec.EllipticCurvePublicKey) else None


def rotation_signer(config: Config, desired: Desired, observed: Observed) -> CA | None:
    """The new client CA (with its key, here) once a client rotation signs with it;
    None: no rotation does, or its key is not on this host."""
    f = role_facts(CLIENT, desired, observed)
    if f is None or f.record.done or not signer_new(f):
        return None
    rotation = read_rotation(config.cluster.pki_dir, CLIENT)
    if rotation is None:
        return None
    key = (str(config.cluster.pki_dir), rotation.record.new)
    if key not in _NEXT:  # read once per new CA, not every cycle (the grace lasts a day)
        new = load_next(config.cluster.pki_dir, rotation)
        if new is None:
            return None
        _NEXT[key] = new
    return _NEXT[key]


_NEXT: dict[tuple[str, str], CA] = {}


def wants_new_ca(config: Config, desired: Desired, observed: Observed, cert: Path) -> bool:
    """A client rotation signs with its new CA and `cert` is not of it yet."""
    f = role_facts(CLIENT, desired, observed)
    if f is None or f.record.done or not signer_new(f):
        return False
    rotation = read_rotation(config.cluster.pki_dir, CLIENT)
    try:
        pem = cert.read_bytes()
    except OSError:
        pem = None
    return rotation is not None and signer_of(pem, rotation) != rotation.record.new


def pending_key_path(tls: TLSFiles) -> Path:
    return tls.key.with_name(tls.key.name + PENDING_SUFFIX)


def _source(observed: Observed | None) -> str | None:
    """A healthy voter's client URL while there is quorum (writes need it)."""
    if observed is None or not observed.has_quorum():
        return None
    voters = [m for m in observed.healthy_voters() if m.client_urls]
    return voters[0].client_urls[0] if voters else None


class DaemonCertRenewal:
    """Side task (every daemon): renew this daemon's certificate in place when due."""

    name = "daemon-cert"

    def __init__(self, config: Config, ca: CA, pool: ClientPool, daemon: str, log: Any,
                 clock: Any = None, may_act: Any = None) -> None:
        self.config = config
        # the daemon that acts re-issues its own for a rotation by its plan (`rotate-ca`
        # step `reissue-daemon`); this task does it for the others
        self.may_act = may_act or (lambda: False)
        self.ca = ca
        self.pool = pool
        self.daemon = daemon.encode()
        self.log = log
        self.now = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.observed: Observed | None = None
        self._wake = asyncio.Event()
        self._expires: dt.datetime | None = None
        self._rotate: tuple[bool, CA | None] = (False, None)  # (wants the new CA, its CA here)

    @property
    def tls(self) -> TLSFiles:
        return daemon_tls(self.config)

    def offer(self, config: Config, desired: Desired, observed: Observed) -> None:
        self.config, self.observed = config, observed
        want = not self.may_act() and wants_new_ca(config, desired, observed, self.tls.cert)
        self._rotate = (want, rotation_signer(config, desired, observed) if want else None)
        if want or self._expires is None or \
                renew_due(self._expires, config.tls.daemon_cert_lifetime, self.now()):
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._expires = not_after(self.tls.cert.read_bytes())
            rotate, new_ca = self._rotate
            if rotate and new_ca is not None:
                pair = new_ca.issue(ROOT, self.config.tls.daemon_cert_lifetime)
                await self._install(pair.cert_pem, pair.key_pem,
                                    "issued by the new client CA (rotation)")
                continue
            if not rotate and not renew_due(self._expires, self.config.tls.daemon_cert_lifetime,
                                            self.now()):
                continue
            if rotate or isinstance(self.ca, PublicCA):
                await self._request()
            else:
                pair = self.ca.issue(ROOT, self.config.tls.daemon_cert_lifetime)
                await self._install(pair.cert_pem, pair.key_pem, "issued here")

    async def _install(self, cert_pem: bytes, key_pem: bytes, how: str) -> None:
        old = self._expires
        write_private(self.tls.key, key_pem)
        write_atomic(self.tls.cert, cert_pem)
        self._expires = not_after(cert_pem)
        self.pool.rotate()  # new channels present the new certificate
        self.log.info("daemon_cert_renewed", how=how, previous_not_after=str(old),
                      not_after=str(self._expires))

    def _pending_key(self) -> ec.EllipticCurvePrivateKey:
        path = pending_key_path(self.tls)
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return key
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(path, key_pem(key))
        return key

    async def _request(self) -> None:
        """Put our CSR (idempotent); install the leader's answer once it is there."""
        url = _source(self.observed)
        if url is None:
            return  # woken again by the next observation
        key = self._pending_key()
        mine = key.public_key().public_numbers()
        client = self.pool.get(url)
        try:
            answer = await client.get(CERT_PREFIX + self.daemon)
            if answer is not None and key_of(answer.value) == mine:
                await client.delete(CSR_PREFIX + self.daemon)  # before the channels go
                await client.delete(CERT_PREFIX + self.daemon)
                pending = pending_key_path(self.tls)
                await self._install(answer.value, pending.read_bytes(), "signed by the leader")
                pending.unlink(missing_ok=True)
                return
            current = await client.get(CSR_PREFIX + self.daemon)
            if current is None or key_of(current.value) != mine:
                await client.put(CSR_PREFIX + self.daemon, make_request(key))
                self.log.info("daemon_cert_requested", daemon=self.daemon.decode(),
                              not_after=str(self._expires))
        except EtcdError as e:
            self.log.warning("daemon_cert_request_failed", error=f"{e.code}: {e.details}")


class RequestSigner:
    """Side task (leader only, with the CA key): sign the daemons' pending requests."""

    name = "daemon-cert-signer"

    def __init__(self, config: Config, ca: CA, pool: ClientPool, log: Any) -> None:
        self.config = config
        self.ca = ca
        self.pool = pool
        self.log = log
        self.observed: Observed | None = None
        self._wake = asyncio.Event()
        self._last = float("-inf")
        self._signer: CA = ca  # the client rotation's new CA once it signs, else `ca`
        self._signed_with: CA | None = None

    def offer(self, config: Config, desired: Desired, observed: Observed) -> None:
        self.config, self.observed = config, observed
        self._signer = rotation_signer(config, desired, observed) or self.ca
        if time.monotonic() - self._last >= SIGN_EVERY or self._signer is not self._signed_with:
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._last = time.monotonic()
            url = _source(self.observed)
            if url is not None:
                self._signed_with = self._signer
                await self.sign_pending(self.pool.get(url))

    async def sign_pending(self, client: Any) -> None:
        try:
            requests = await client.get_prefix(CSR_PREFIX)
            for kv in requests:
                suffix = kv.key[len(CSR_PREFIX):]  # the daemon's id
                daemon = suffix.decode(errors="replace")
                answered = await client.get(CERT_PREFIX + suffix)
                wanted = key_of(kv.value)
                if answered is not None and wanted and key_of(answered.value) == wanted and \
                        issued_by(answered.value, self._signer.cert_pem):
                    continue  # signed already; the daemon has yet to pick it up
                try:
                    cert = sign_request(self._signer, kv.value,
                                        self.config.tls.daemon_cert_lifetime)
                except ValueError as e:
                    self.log.warning("daemon_cert_refused", daemon=daemon, reason=str(e))
                    await client.delete(kv.key)
                    continue
                await client.put(CERT_PREFIX + suffix, cert)
                self.log.info("daemon_cert_signed", daemon=daemon,
                              not_after=str(not_after(cert)))
        except EtcdError as e:
            self.log.warning("daemon_cert_sign_failed", error=f"{e.code}: {e.details}")


"""The CA a daemon starts with: loaded, made once, or refused. Never replaced.

Every member and client of the cluster trusts one CA. A CA made while an
old one is in use cuts the daemon off its own cluster (each TLS handshake
fails) and looks like quorum loss, so a new CA is made only on a true first
start: no CA file at all, this host never held one (`pki/ca.key.expected`,
`pki/daemon-root.crt`), and no sign of a cluster (member data, history,
`cluster-formed.json`, a member answering on its client port). Otherwise a
missing part is reported as an event naming the file and how to bring it
back, and the daemon exits with EXIT_REFUSED. ckeetcd.pki.ca_action is the
decision; this module gathers its facts and carries it out.

Keeping the multi-daemon rules: a daemon that is not the bootstrapper gets
the CA by `ckeetcd ca import` (`ca_missing` until then), and one that
imported a `--no-key` bundle follows without the key (`ca_key_absent`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ckeetcd.coordination.election import daemon_id
from ckeetcd.core.config import Config
from ckeetcd.pki import (
    CA,
    CA_CERT_MISSING,
    CA_CREATE,
    CA_FINISH,
    CA_FOLLOW,
    CA_KEY_EXPECTED,
    CA_KEY_MISSING,
    CA_LOAD,
    CA_MISSING,
    PEER,
    PEER_CREATE,
    PEER_ELSEWHERE,
    PEER_FINISH,
    PEER_FOLLOW,
    PEER_KEY_MISSING,
    PEER_LOAD,
    PEER_ONE_CA,
    CAError,
    CAFacts,
    CAKeyMismatch,
    PeerFacts,
    TLSFiles,
    Trust,
    ca_action,
    ca_paths,
    ca_subject,
    create_ca,
    expect_key,
    load_ca,
    peer_ca_action,
    read_ca_cert,
)
from ckeetcd.pki import write_cert_key as _write_cert_key
from ckeetcd.pki.catransfer import PublicCA
from ckeetcd.pki.rotationfiles import CLIENT, read_rotation, settle
from ckeetcd.pki.tlsprobe import issuer_names
from ckeetcd.tasks.daemoncert import daemon_tls, renew_due

# `ckeetcd run` refused to start until an operator acts (sysexits EX_CONFIG);
# systemd/ckeetcd.service does not restart on it (RestartPreventExitStatus).
EXIT_REFUSED = 78
PROBE_TIMEOUT = 1.0  # seconds to wait for a member's client port before a first CA

Note = tuple[str, str, dict[str, Any]]  # (level, event, fields)
REPAIR = ("put back the cluster's own ca.crt and ca.key (a matching pair: from a backup of "
          "this host's pki dir, or `ckeetcd ca export` on another daemon host and `ckeetcd ca "
          "import --force FILE` here); a new CA would cut the daemon off its members")


class CARefused(Exception):
    """No CA may be used or made; `event` and `fields` say what is missing and what to do."""

    def __init__(self, event: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.event = event
        self.fields = {"error": message, **fields}


def _history_signs(state_dir: Path) -> list[str]:
    signs = []
    for name in ("history.jsonl", "cluster-formed.json"):
        p = state_dir / name
        if p.is_file() and p.stat().st_size > 0:
            signs.append(str(p))
    members = state_dir / "members"
    if members.is_dir():
        signs += sorted(str(d / "data") for d in members.iterdir() if (d / "data").is_dir())
    return signs


def _answering(config: Config) -> list[str]:
    """Members that serve a certificate of this cluster's CA on their client port (an
    issuer named like our CA: a proxy or another cluster on the address does not count)."""
    want = ca_subject(config.cluster.name)
    port = config.cluster.client_port

    def probe(host: str) -> str:
        found = want in issuer_names(host, port, PROBE_TIMEOUT)
        return f"{host}:{port} serves a certificate of {want}" if found else ""
    hosts = [m.address for m in config.members]
    if not hosts:
        return []
    with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
        return [s for s in pool.map(probe, hosts) if s]


def facts(config: Config) -> CAFacts:
    """The local facts (files only; a member probe is added by `open_ca` when it matters)."""
    d = config.cluster.pki_dir
    cert, key = ca_paths(d)
    tls = daemon_tls(config)
    return CAFacts(
        cert=cert.exists(), key=key.exists(), key_expected=(d / CA_KEY_EXPECTED).exists(),
        client_cert=tls.cert.exists() and tls.key.exists(), election=config.election,
        bootstrapper=not config.election or daemon_id(config) == config.bootstrapper,
        cluster=tuple(_history_signs(config.cluster.state_dir)))


def open_ca(config: Config) -> tuple[Trust, list[Note]]:
    """The daemon's CAs (client and peer) and its own root client certificate (made,
    renewed or replaced when unusable); CARefused when the daemon must not start. Notes
    are to be logged."""
    try:
        settled = settle(config.cluster.pki_dir)  # a rotation's finish a kill left half done
        ca, action, cluster, notes = _open_ca(config)
        notes += [("warning", "ca_rotation_finished", {"role": r, "why": "the daemon stopped "
                   "while the new CA replaced the old one: completed"}) for r in settled]
        peer, peer_notes = _open_peer_ca(config, ca, action, cluster)
        return Trust(ca, peer), notes + peer_notes
    except CAError as e:
        raise CARefused("ca_key_mismatch" if isinstance(e, CAKeyMismatch) else "ca_unusable",
                        str(e), pki_dir=str(config.cluster.pki_dir), hint=REPAIR) from None
    except OSError as e:
        path = e.filename or config.cluster.pki_dir
        raise CARefused("ca_unusable", f"{path}: {e.strerror or e}",
                        pki_dir=str(config.cluster.pki_dir),
                        hint="the daemon must be able to read and write its pki dir (run it as "
                             "the user that owns it)") from None


def _open_ca(config: Config) -> tuple[CA, str, bool, list[Note]]:
    """The client CA, the action taken, and whether the cluster shows it exists."""
    d = config.cluster.pki_dir
    cert_path, key_path = ca_paths(d)
    f = facts(config)
    action = ca_action(f)
    if action in (CA_CREATE, CA_FINISH):
        answering = _answering(config)
        if answering:
            f = dataclasses.replace(f, cluster=tuple(answering))
            action = ca_action(f)
    notes: list[Note] = []
    ca: CA
    if action == CA_LOAD:
        ca = load_ca(d)
        expect_key(d)  # also marks a CA made by an earlier ckeetcd
    elif action == CA_CREATE:
        ca = create_ca(d, config.cluster.name)
        notes.append(("info", "ca_created", {"ca_cert": str(cert_path), "ca_key": str(key_path),
                                             "subject": ca.cert.subject.rfc4514_string()}))
    elif action == CA_FINISH:
        ca = create_ca(d, config.cluster.name, key=_bare_key(key_path))
        notes.append(("warning", "ca_certificate_completed", {
            "ca_cert": str(cert_path), "ca_key": str(key_path),
            "why": "the key was there without its certificate and no cluster exists yet "
                   "(a first start that stopped in between): the certificate was made for it"}))
    elif action == CA_FOLLOW:
        cert = read_ca_cert(cert_path)
        problem = client_cert_problem(daemon_tls(config), cert, _next_client_ca(config))
        if problem:
            raise CARefused("daemon_cert_unusable", f"{daemon_tls(config).cert}: {problem}; "
                            "without the CA key this daemon cannot make a new one",
                            hint="on a host with the CA key run `ckeetcd ca export --no-key "
                                 "--out FILE`, then `ckeetcd ca import FILE` here")
        notes.append(("warning", "ca_key_absent", {
            "pki_dir": str(d), "daemon": daemon_id(config),
            "hint": "this daemon can follow but not lead"}))
        return PublicCA(cert, cert_path), action, bool(f.cluster), notes
    else:
        raise _refusal(config, action, f)
    notes += _ensure_client_cert(config, ca)
    return ca, action, bool(f.cluster), notes


def _serving_peer_ca(config: Config) -> bool:
    """Whether a member's peer port serves a certificate of this cluster's peer CA."""
    want = ca_subject(config.cluster.name, PEER)
    port = config.cluster.peer_port
    hosts = [m.address for m in config.members]
    if not hosts:
        return False
    with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
        return any(want in names for names in
                   pool.map(lambda h: issuer_names(h, port, PROBE_TIMEOUT), hosts))


def _open_peer_ca(config: Config, ca: CA, client_action: str,
                  cluster: bool) -> tuple[CA, list[Note]]:
    """The peer CA (ckeetcd.pki.peer_ca_action decides): made beside a new client CA,
    loaded, or the client CA itself for a cluster made before the peer CA existed."""
    d = config.cluster.pki_dir
    cert_path, key_path = ca_paths(d, PEER)
    rotation = read_rotation(d, PEER)
    f = PeerFacts(cert=cert_path.exists(), key=key_path.exists(), client_action=client_action,
                  bootstrapper=facts(config).bootstrapper, cluster=cluster,
                  rotating=rotation is not None and not rotation.record.done)
    action = peer_ca_action(f)
    if action in (PEER_CREATE, PEER_FINISH) and client_action == CA_LOAD and _answering(config):
        # an imported or older CA, and members already serving it: not a first start
        f = dataclasses.replace(f, cluster=True)
        action = peer_ca_action(f)
    if action == PEER_ONE_CA and f.cluster:
        action = peer_ca_action(dataclasses.replace(f, served=_serving_peer_ca(config)))
    if action == PEER_LOAD:
        return load_ca(d, PEER), []
    if action == PEER_FOLLOW:
        return PublicCA(read_ca_cert(cert_path), cert_path), []
    if action == PEER_ONE_CA:
        return ca, []
    if action in (PEER_CREATE, PEER_FINISH):
        key = _bare_key(key_path) if action == PEER_FINISH else None
        peer = create_ca(d, config.cluster.name, key=key, role=PEER)
        return peer, [("info", "ca_created", {
            "ca_cert": str(cert_path), "ca_key": str(key_path), "role": PEER,
            "subject": peer.cert.subject.rfc4514_string()})]
    bring_back = (f"bring back {d}'s peer CA (peer-ca.crt and peer-ca.key) from a backup of "
                  "this host's pki dir or a `ckeetcd ca export` bundle of a daemon host that "
                  "has it (`ckeetcd ca import --force FILE`); a new peer CA would cut the "
                  "members off each other")
    if action == PEER_ELSEWHERE:
        raise CARefused("peer_ca_missing", f"{cert_path}: missing, while the members present "
                        f"peer certificates of {ca_subject(config.cluster.name, PEER)}",
                        missing=[str(cert_path), str(key_path)], pki_dir=str(d),
                        hint="this host's CA bundle is older than the cluster's peer CA: on a "
                             "daemon host that has it run `ckeetcd ca export --out FILE`, "
                             "then `ckeetcd ca import --force FILE` here")
    missing = [str(key_path)] if action == PEER_KEY_MISSING else [str(cert_path)]
    raise CARefused(action, f"{missing[0]}: missing; the peer CA of this cluster is "
                    "incomplete and a new one would cut the members off each other, so none "
                    "is made", missing=missing, pki_dir=str(d), role=PEER, hint=bring_back)


def _bare_key(key_path: Path) -> Any:
    """The CA key alone (its certificate is missing), checked to be an EC key."""
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise CAError(f"{key_path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAError(f"{key_path}: not an EC private key")
    return key


def _refusal(config: Config, action: str, f: CAFacts) -> CARefused:
    d = config.cluster.pki_dir
    cert_path, key_path = ca_paths(d)
    me = daemon_id(config)
    bring_back = ("bring it back: restore it from a backup of this host's "
                  f"{d}, or copy the CA from a daemon host that has it (there: `ckeetcd ca "
                  "export --out FILE`; here: `ckeetcd ca import FILE`)")
    signs = list(f.cluster) or (["this host held the CA before"] if f.key_expected or
                                f.client_cert else [])
    if action == CA_MISSING:
        return CARefused("ca_missing", f"{cert_path}: missing; this daemon ({me}) is not the "
                         "bootstrapper, so it does not make a CA",
                         pki_dir=str(d), daemon=me,
                         hint="this daemon is not the bootstrapper: run `ckeetcd ca export --out "
                              "FILE` where the CA is and `ckeetcd ca import FILE` here")
    if action == CA_CERT_MISSING:
        copies = sorted(str(p) for p in (config.cluster.state_dir / "members").glob(
            "*/tls/ca.crt"))
        where = f" (each local member has a copy, e.g. {copies[0]})" if copies else ""
        return CARefused("ca_cert_missing", f"{cert_path}: missing while its key is there",
                         missing=[str(cert_path)], cluster=signs, pki_dir=str(d),
                         hint=f"the CA certificate must come back, not a new CA: {bring_back}"
                              f"{where}")
    missing = [str(key_path)] if f.cert else [str(cert_path), str(key_path)]
    what = "the CA key" if f.cert else "the CA (certificate and key)"
    return CARefused(
        CA_KEY_MISSING, f"{', '.join(missing)}: missing; {what} of this cluster is gone and "
        "a new CA would cut this daemon off every member and client that trusts the old one, "
        "so none is made", missing=missing, cluster=signs, pki_dir=str(d),
        hint=f"{bring_back}; only if the cluster itself is to be abandoned, move "
             f"{config.cluster.state_dir} aside (and stop its members) to start a new one")


def _next_client_ca(config: Config) -> x509.Certificate | None:
    """The new CA of a client CA rotation under way (None: none is, or not made yet)."""
    try:
        rotation = read_rotation(config.cluster.pki_dir, CLIENT)
    except CAError:
        return None
    if rotation is None or rotation.record.done or not rotation.new_pem:
        return None
    return x509.load_pem_x509_certificate(rotation.new_pem)


def client_cert_problem(tls: TLSFiles, ca_cert: x509.Certificate,
                        next_ca: x509.Certificate | None = None) -> str:
    """Why the daemon's root client certificate cannot be used ("" when it can). During
    a client CA rotation one from its new CA (`next_ca`) is as good: a daemon killed
    after the rotation re-issued it must not go back to the old CA."""
    try:
        cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    except FileNotFoundError:
        return "missing"
    except ValueError:
        return "not a PEM certificate"
    for issuer in (ca_cert, next_ca):
        try:
            if issuer is not None:
                cert.verify_directly_issued_by(issuer)
                break
        except Exception:  # ValueError, TypeError, InvalidSignature: not ours either way
            continue
    else:
        return "not signed by the CA in ca.crt"
    try:
        key = serialization.load_pem_private_key(tls.key.read_bytes(), password=None)
    except FileNotFoundError:
        return f"{tls.key.name} missing"
    except (ValueError, TypeError):
        return f"{tls.key.name} is not an unencrypted PEM private key"
    if key.public_key() != cert.public_key():
        return f"{tls.key.name} does not belong to it"
    return ""


def _ensure_client_cert(config: Config, ca: CA) -> list[Note]:
    """Issue the root client certificate when it is missing, unusable or due (1/3 life)."""
    tls = daemon_tls(config)
    lifetime = config.tls.daemon_cert_lifetime
    problem = client_cert_problem(tls, ca.cert, _next_client_ca(config))
    if not problem:
        expires = x509.load_pem_x509_certificate(tls.cert.read_bytes()).not_valid_after_utc
        if not renew_due(expires, lifetime, dt.datetime.now(dt.timezone.utc)):
            return []
    _write_cert_key(tls.cert, tls.key, ca.issue("root", lifetime))
    if problem in ("", "missing"):
        return []
    return [("warning", "daemon_cert_reissued", {"cert": str(tls.cert), "reason": problem})]


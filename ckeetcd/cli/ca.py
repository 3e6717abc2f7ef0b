"""`ckeetcd ca export --out FILE [--no-key]` and `ckeetcd ca import FILE [--force]`.

Exit status: 0 done; 1 the CA cannot be exported or installed here (the
message names the file and says what to do); 2 bad usage, nothing written:
FILE is not a readable bundle of this cluster, the state dir may not be used,
or this host has a different CA (`--force` replaces it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ckeetcd.cli.common import claimed, load
from ckeetcd.cli.errors import USAGE_ERROR

if TYPE_CHECKING:  # the commands import lazily: `ckeetcd --help` stays quick
    from ckeetcd.core.config import Config
    from ckeetcd.core.model import Observed
    from ckeetcd.pki import CA
    from ckeetcd.pki.rotationfiles import Rotation

HEALTH_TRIES = 5  # observations (a second apart) before `ca rotate` calls the cluster unhealthy


def _error(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def ca_export(args: argparse.Namespace) -> int:
    from ckeetcd.loop.daemonca import CARefused, open_ca
    from ckeetcd.pki import ca_paths
    from ckeetcd.pki.catransfer import export_bundle
    from ckeetcd.support.files import write_private

    config = load(args)
    cert_path, key_path = ca_paths(config.cluster.pki_dir)
    if cert_path.exists() and not key_path.exists():
        return _error(f"{key_path} missing: this host cannot export the CA "
                      "(export it where the key is)", 1)
    refused = claimed(config)
    if refused:
        return _error(refused, USAGE_ERROR)
    try:
        trust, _ = open_ca(config)  # creates the CAs on the first node
    except CARefused as e:
        hint = e.fields.get("hint")
        return _error(f"{e}" + (f"\n  {hint}" if hint else ""), 1)
    daemon_cert = None if not args.no_key else \
        trust.client.issue("root", config.tls.daemon_cert_lifetime)
    out = Path(args.out)
    next_cas = {} if args.no_key else _next_cas(config)
    try:
        write_private(out, export_bundle(trust, config.cluster.name, not args.no_key, daemon_cert,
                                         next_cas))
    except OSError as e:
        return _error(f"--out {out}: cannot write: {e.strerror or e}", 1)
    what = "CA certificate and key" if not args.no_key else \
        "CA certificate and a root client certificate (no CA key)"
    if next_cas:
        what += f", and the new {' and '.join(next_cas)} CA of the rotation under way"
    print(f"exported {what} of cluster {config.cluster.name} to {out} (mode 0600)")
    return 0


def _next_cas(config: Config) -> dict[str, CA]:
    """The new CAs (with their keys) of the rotations under way, where this host has them."""
    from ckeetcd.pki.rotationfiles import RotationError, load_next, read_rotations

    try:
        rotations = read_rotations(config.cluster.pki_dir)
    except RotationError:
        return {}
    out = {}
    for role, rotation in rotations.items():
        if rotation.record.done:
            continue
        new = load_next(config.cluster.pki_dir, rotation)
        if new is not None:
            out[role] = new
    return out


def ca_import(args: argparse.Namespace) -> int:
    from ckeetcd.pki.catransfer import CATransferError, DifferentCA, import_bundle, parse_bundle
    from ckeetcd.tasks.daemoncert import daemon_tls

    config = load(args)
    try:
        raw = Path(args.file).read_bytes()
    except OSError as e:
        return _error(f"FILE: {args.file}: cannot read: {e.strerror or e}", USAGE_ERROR)
    try:
        data = parse_bundle(raw, config.cluster.name)
    except CATransferError as e:
        return _error(f"FILE: {args.file}: {e}", USAGE_ERROR)
    refused = claimed(config)
    if refused:
        return _error(refused, USAGE_ERROR)
    tls = daemon_tls(config)
    try:
        what = import_bundle(data, config.cluster.pki_dir, tls.cert, tls.key, force=args.force)
    except DifferentCA as e:
        return _error(str(e), USAGE_ERROR)
    except OSError as e:
        return _error(f"{e.filename or config.cluster.pki_dir}: cannot write: {e.strerror or e}", 1)
    print(f"imported {what} into {config.cluster.pki_dir}")
    return 0


def ca_rotate(args: argparse.Namespace) -> int:
    """Start a CA rotation: record it in etcd (/ckeetcd/rotation/<role>, every daemon
    follows it from there) and in this host's pki dir; the leader daemon carries it out
    (ckeetcd.core.carotation). Exit 2, nothing written, when it may not start now."""
    import asyncio
    import time

    from ckeetcd.cli.status import gather
    from ckeetcd.core.carotation import CLIENT, PEER, refusal
    from ckeetcd.core.rollplan import describe, pending
    from ckeetcd.pki import PEER_CA_CERT, ca_paths
    from ckeetcd.pki.rotationfiles import (
        RotationError,
        cert_fingerprint,
        new_rotation,
        read_rotations,
        write_rotation,
    )

    config = load(args)
    role = PEER if args.peer else CLIENT
    pki = config.cluster.pki_dir
    try:
        records = [r.record for r in read_rotations(pki).values()]
    except RotationError as e:
        return _error(str(e), USAGE_ERROR)
    separate = (pki / PEER_CA_CERT).exists()
    cert_path, key_path = ca_paths(pki, role if separate else CLIENT)
    if not cert_path.exists():
        return _error(f"{cert_path}: missing: no cluster CA here (start the daemon first)",
                      USAGE_ERROR)
    desired, observed = asyncio.run(gather(config))
    for _ in range(HEALTH_TRIES - 1):  # one Status answer late under load is no sickness
        if observed.all_healthy():
            break
        time.sleep(1.0)
        desired, observed = asyncio.run(gather(config))
    why = refusal(role, records, describe(pending(desired, observed)),
                  observed.all_healthy(), key_path.exists(), separate)
    last = next((r for r in records if r.role == role and r.done), None)
    if not why and last is not None and cert_fingerprint(cert_path.read_bytes()) != last.new:
        why = (f"{cert_path} is not the {role} CA the last rotation ended on ({last.new}): "
               "this host did not follow it (the new CA's key never came here); copy the "
               "CA from a daemon host that has it (there `ckeetcd ca export --out FILE`, "
               "here `ckeetcd ca import --force FILE`) first")
    if why and not observed.all_healthy():
        sick = [m.name or f"{m.id:x}" for m in observed.members or ()
                if not observed.is_healthy(m)]
        why += f" ({', '.join(sick) if sick else 'no member answers'})"
    migration = role == PEER and not separate
    rotation = new_rotation(role, cert_path.read_bytes(), migration)
    if not why:
        why = asyncio.run(_publish(config, observed, rotation))
    if why:
        return _error(f"ca rotate --{role}: {why}", USAGE_ERROR)
    write_rotation(pki, rotation)
    what = "migration from one CA to a separate peer CA" if migration else f"{role} CA rotation"
    print(f"started the {what} (old CA {rotation.record.old}); the leader daemon carries it "
          "out one member at a time: follow it with `ckeetcd status` or `ckeetcd plan`")
    return 0


async def _publish(config: Config, observed: Observed, rotation: Rotation) -> str:
    """Put the new record into etcd, where every daemon reads it; why not ("" = done).
    A client rotation also needs every running daemon to publish its root certificate
    (presence), or it could never see them renew from the new CA."""
    from ckeetcd.coordination.presence import PREFIX, parse_cert
    from ckeetcd.coordination.rotationmirror import publish_start
    from ckeetcd.core.carotation import CLIENT, daemons_refusal
    from ckeetcd.etcd import ClientPool, EtcdError
    from ckeetcd.tasks.daemoncert import daemon_tls

    pool = ClientPool(daemon_tls(config), config.daemon.rpc_timeout)
    urls = [m.client_urls[0] for m in observed.healthy_voters() if m.client_urls]
    error = "no healthy member answers"
    try:
        for url in urls:
            client = pool.get(url)
            try:
                if rotation.record.role == CLIENT and config.election:
                    present = await client.get_prefix(PREFIX)
                    unseen = [p.key[len(PREFIX):].decode(errors="replace") for p in present
                              if parse_cert(p.value) is None]
                    why = daemons_refusal(CLIENT, unseen)
                    if why:
                        return why
                busy = await publish_start(client, rotation)
            except EtcdError as e:
                error = f"{url}: {e.code}: {e.details}"
                continue
            if busy:
                return (f"a {busy} CA rotation is under way (recorded in etcd by another "
                        "daemon host): one rotation at a time (`ckeetcd status` shows it)")
            return ""
    finally:
        await pool.close()
    return f"cannot record the rotation in etcd ({error})"

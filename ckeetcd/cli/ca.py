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

from ckeetcd.cli.common import claimed, load
from ckeetcd.cli.errors import USAGE_ERROR

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
    try:
        write_private(out, export_bundle(trust, config.cluster.name, not args.no_key, daemon_cert))
    except OSError as e:
        return _error(f"--out {out}: cannot write: {e.strerror or e}", 1)
    what = "CA certificate and key" if not args.no_key else \
        "CA certificate and a root client certificate (no CA key)"
    print(f"exported {what} of cluster {config.cluster.name} to {out} (mode 0600)")
    return 0


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
    """Start a CA rotation: record it in the pki dir; the daemon carries it out
    (ckeetcd.core.carotation). Exit 2, nothing written, when it may not start now."""
    import asyncio
    import time

    from ckeetcd.cli.status import daemons, gather
    from ckeetcd.coordination.election import daemon_id
    from ckeetcd.core.carotation import CLIENT, PEER, daemons_refusal, refusal
    from ckeetcd.core.rollplan import describe, pending
    from ckeetcd.pki import PEER_CA_CERT, ca_paths
    from ckeetcd.pki.rotationfiles import RotationError, read_rotations, start_rotation

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
    if why and not observed.all_healthy():
        sick = [m.name or f"{m.id:x}" for m in observed.members or ()
                if not observed.is_healthy(m)]
        why += f" ({', '.join(sick) if sick else 'no member answers'})"
    if not why and config.election:
        leader, live = asyncio.run(daemons(config, observed))
        why = daemons_refusal(role, [str(d.get("id")) for d in live or ()
                                     if d.get("id") != leader])
        if not why and leader != daemon_id(config):
            why = (f"the leader daemon is {leader or 'not known'}, not this host's "
                   f"({daemon_id(config)}): the record is read where the command runs, so "
                   "run it on the leader's host (the other daemons do not see it yet)")
    if why:
        return _error(f"ca rotate --{role}: {why}", USAGE_ERROR)
    migration = role == PEER and not separate
    rotation = start_rotation(pki, role, cert_path.read_bytes(), migration)
    what = "migration from one CA to a separate peer CA" if migration else f"{role} CA rotation"
    print(f"started the {what} (old CA {rotation.record.old}); the daemon carries it out one "
          "member at a time: follow it with `ckeetcd status` or `ckeetcd plan`")
    return 0

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


def _error(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def ca_export(args: argparse.Namespace) -> int:
    from ckeetcd.loop.daemon import pki_dir
    from ckeetcd.loop.daemonca import CARefused, open_ca
    from ckeetcd.pki import ca_paths
    from ckeetcd.pki.catransfer import export_bundle
    from ckeetcd.support.files import write_private

    config = load(args)
    cert_path, key_path = ca_paths(pki_dir(config))
    if cert_path.exists() and not key_path.exists():
        return _error(f"{key_path} missing: this host cannot export the CA "
                      "(export it where the key is)", 1)
    refused = claimed(config)
    if refused:
        return _error(refused, USAGE_ERROR)
    try:
        ca, _ = open_ca(config)  # creates the CA on the first node
    except CARefused as e:
        hint = e.fields.get("hint")
        return _error(f"{e}" + (f"\n  {hint}" if hint else ""), 1)
    daemon_cert = None if not args.no_key else \
        ca.issue("root", config.tls.daemon_cert_lifetime)
    out = Path(args.out)
    try:
        write_private(out, export_bundle(ca, config.cluster.name, not args.no_key, daemon_cert))
    except OSError as e:
        return _error(f"--out {out}: cannot write: {e.strerror or e}", 1)
    what = "CA certificate and key" if not args.no_key else \
        "CA certificate and a root client certificate (no CA key)"
    print(f"exported {what} of cluster {config.cluster.name} to {out} (mode 0600)")
    return 0


def ca_import(args: argparse.Namespace) -> int:
    from ckeetcd.loop.daemon import pki_dir
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
        what = import_bundle(data, pki_dir(config), tls.cert, tls.key, force=args.force)
    except DifferentCA as e:
        return _error(str(e), USAGE_ERROR)
    except OSError as e:
        return _error(f"{e.filename or pki_dir(config)}: cannot write: {e.strerror or e}", 1)
    print(f"imported {what} into {pki_dir(config)}")
    return 0

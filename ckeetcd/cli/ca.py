"""`ckeetcd ca export --out FILE [--no-key]` and `ckeetcd ca import FILE [--force]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ckeetcd.cli.common import load


def ca_export(args: argparse.Namespace) -> int:
    from ckeetcd.catransfer import export_bundle
    from ckeetcd.daemon import ensure_daemon_pki, pki_dir
    from ckeetcd.pki import ca_paths, ensure_private_dir, write_private

    config = load(args)
    cert_path, key_path = ca_paths(pki_dir(config))
    if cert_path.exists() and not key_path.exists():
        print(f"error: {key_path} missing: this host cannot export the CA "
              "(export it where the key is)", file=sys.stderr)
        return 1
    ensure_private_dir(config.cluster.state_dir)
    ca = ensure_daemon_pki(config)  # creates the CA on the first node
    daemon_cert = None if not args.no_key else \
        ca.issue("root", config.tls.daemon_cert_lifetime)
    out = Path(args.out)
    write_private(out, export_bundle(ca, config.cluster.name, not args.no_key, daemon_cert))
    what = "CA certificate and key" if not args.no_key else \
        "CA certificate and a root client certificate (no CA key)"
    print(f"exported {what} of cluster {config.cluster.name} to {out} (mode 0600)")
    return 0


def ca_import(args: argparse.Namespace) -> int:
    from ckeetcd.catransfer import CATransferError, import_bundle, parse_bundle
    from ckeetcd.daemon import pki_dir
    from ckeetcd.daemoncert import daemon_tls

    config = load(args)
    try:
        data = parse_bundle(Path(args.file).read_bytes(), config.cluster.name)
        tls = daemon_tls(config)
        what = import_bundle(data, pki_dir(config), tls.cert, tls.key, force=args.force)
    except (OSError, CATransferError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"imported {what} into {pki_dir(config)}")
    return 0

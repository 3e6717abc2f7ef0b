"""`ckeetcd check-config`: validate, print each problem, exit 2 when any.

Where members run on this machine, it also says which etcd version the
configured binary is (`etcd --version`) and, when the members answer, whether
etcd supports moving them from the versions they run to that one
(ckeetcd.core.etcdversions.upgrade_path): a refused change is a problem of
`etcd.binary` (exit 2); a known-bad release is a warning.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ckeetcd.cli.common import load_and_probe
from ckeetcd.core.config import Config, Problem


def check_config(args: argparse.Namespace) -> int:
    config = load_and_probe(args)
    print(f"{config.path}: ok ({len(config.members)} members: "
          f"{', '.join(m.name for m in config.members)})")
    refusal = version_check(config)
    if refusal is not None:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    return 0


def version_check(config: Config) -> Problem | None:
    """Print the binary's version and what etcd says about moving the members to it;
    the refusal as a problem of `etcd.binary` (None when allowed or not knowable)."""
    from ckeetcd.core.etcdversions import (
        Refused,
        bad_release_warning,
        cluster_path,
        facts_from_flags,
        parse_version,
    )
    from ckeetcd.nodes.etcdprobe import binary_version_of

    got = binary_version_of(config)
    if got is None:
        return None
    path, version = got
    if version is None:
        print(f"etcd binary: {path}: its --version names no etcd version (not checked)")
        return None
    print(f"etcd binary: {path}: etcd {version}")
    if warning := bad_release_warning(version):
        print(f"warning: {config.path}: etcd.binary: {warning}", file=sys.stderr)
    running = member_versions(config)
    if running is None:
        print("members: not reachable (the version change is checked once they answer)")
        return None
    if not running:
        print("members: none running yet")
        return None
    print("members run: " + ", ".join(f"{n} {v}" for n, v in running))
    versions = [v for _, text in running if (v := parse_version(text)) is not None]
    verdict = cluster_path(versions, version, facts_from_flags(config.etcd.extra_args))
    if isinstance(verdict, Refused):
        return Problem(str(config.path), "etcd.binary", f"{path}: refused: {verdict.reason}")
    print(f"version change: allowed: {verdict.reason}"
          + (f" ({verdict.note})" if verdict.note else ""))
    return None


def member_versions(config: Config) -> list[tuple[str, str]] | None:
    """(member, version) of the members that answer; None when none answers."""
    from ckeetcd.cli.status import gather

    try:
        _, observed = asyncio.run(gather(config))
    except OSError:
        return None
    if observed.members is None:
        return None
    return list(observed.member_versions())

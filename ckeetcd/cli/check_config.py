"""`ckeetcd check-config`: validate, print each problem, exit 2 when any.

It also says which etcd version each binary members would run is: the local
one (`etcd --version`, ckeetcd.nodes.etcdprobe) and, for members over SSH,
the one on each member's node (asked over the daemon's SSH,
ckeetcd.nodes.sshversion). When the members answer, it checks whether etcd
supports moving them from the versions they run to each of those
(ckeetcd.core.binaryreport): a refused change is a problem of the key that
names the binary (`etcd.binary`, `ssh.etcd_binary`, `members[i].etcd_binary`;
exit 2); a known-bad release and a node that does not answer are warnings.
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
    problems = version_check(config)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 2 if problems else 0


def version_check(config: Config) -> list[Problem]:
    """Print each binary's version and what etcd says about moving the members to it;
    the refusals (and binaries missing on a node) as problems of the config."""
    from ckeetcd.core.binaryreport import BinaryAnswer, binary_report
    from ckeetcd.core.etcdversions import facts_from_flags
    from ckeetcd.nodes.etcdprobe import binary_version_of

    answers = []
    if (local := binary_version_of(config)) is not None:
        path, version = local
        answers.append(BinaryAnswer("etcd.binary", path, version=version,
                                    unknown="its --version names no etcd version"))
    if any(m.runtime == "ssh" for m in config.members):
        from ckeetcd.nodes.sshversion import ssh_binary_answers

        answers += asyncio.run(ssh_binary_answers(config))
    asked = any(a.version is not None for a in answers)
    running = member_versions(config) if asked else None
    report = binary_report(str(config.path), answers, running,
                           facts_from_flags(config.etcd.extra_args))
    for line in report.lines:
        print(line)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return list(report.problems)


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

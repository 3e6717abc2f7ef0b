"""What `ckeetcd check-config` says about the etcd binaries members would run.

Pure: the answers were gathered at the edges (the local binary's `--version`,
ckeetcd.nodes.etcdprobe; each SSH node's, ckeetcd.nodes.sshversion) and so
were the versions members run now. One report for both kinds, so a refusal
reads the same wherever the binary lives: `KEY: WHERE: refused: REASON`, an
error of the config (exit 2), with the reason etcdversions.cluster_path gives.

Kinds of answer, and what each is:

- a version: printed, checked against what the members run;
- `missing` (the node answered, the binary is not there or cannot be stat'ed):
  an error of the config, as a missing local binary is;
- `unknown` (it ran, but named no version): noted, not checked;
- `unreachable` (the node did not answer over SSH): a warning, not an error:
  the config may be right, the node is down; it is checked once it answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ckeetcd.core.config import Problem
from ckeetcd.core.etcdversions import (
    Refused,
    UpgradeFacts,
    Version,
    bad_release_warning,
    cluster_path,
    parse_version,
)

NO_FACTS = UpgradeFacts()


@dataclass(frozen=True)
class BinaryAnswer:
    """What one etcd binary members would run said, or why it could not be asked."""

    key: str  # the config key that names it: etcd.binary, ssh.etcd_binary, members[i]...
    binary: str  # its path (on the node, for SSH)
    node: str = ""  # "" = this machine; else "HOST (member)", or several, comma-separated
    version: Version | None = None
    missing: str = ""
    unknown: str = ""
    unreachable: str = ""

    @property
    def where(self) -> str:
        return f"{self.binary} on {self.node}" if self.node else self.binary

    @property
    def at(self) -> str:
        """"WHERE: " for a node's binary; "" for the local one (its lines name it once)."""
        return f"{self.where}: " if self.node else ""


@dataclass(frozen=True)
class Report:
    lines: tuple[str, ...] = ()  # for stdout
    warnings: tuple[str, ...] = ()  # for stderr, each after "warning: "
    problems: tuple[Problem, ...] = ()  # errors of the config: exit 2


def merged(answers: Sequence[BinaryAnswer]) -> list[BinaryAnswer]:
    """Node answers of one key, path and version as one (five nodes on one release
    make one line, not five); everything else as it came, in order."""
    out: list[BinaryAnswer] = []
    for a in answers:
        same = next((i for i, b in enumerate(out) if a.node and b.node and a.version
                     and (b.key, b.binary, b.version) == (a.key, a.binary, a.version)
                     and not (b.missing or b.unknown or b.unreachable)), None)
        if same is None:
            out.append(a)
        else:
            out[same] = replace(out[same], node=f"{out[same].node}, {a.node}")
    return out


def binary_report(file: str, answers: Sequence[BinaryAnswer],
                  running: Sequence[tuple[str, str]] | None,
                  facts: UpgradeFacts = NO_FACTS) -> Report:
    """The lines, warnings and problems for `answers`, given the (member, version)
    pairs members run (`running`: None = no member answered; [] = none runs yet)."""
    lines: list[str] = []
    warnings: list[str] = []
    problems: list[Problem] = []
    answers = merged(answers)
    for a in answers:
        if a.unreachable:
            warnings.append(f"{file}: {a.key}: {a.where}: not asked: {a.unreachable} "
                            "(checked once the node answers)")
        elif a.missing:
            problems.append(Problem(file, a.key, f"{a.where}: {a.missing}"))
        elif a.version is None:
            lines.append(f"etcd binary: {a.where}: {a.unknown or 'names no etcd version'} "
                         "(not checked)")
        else:
            lines.append(f"etcd binary: {a.where}: etcd {a.version}")
            if bad := bad_release_warning(a.version):
                warnings.append(f"{file}: {a.key}: {a.at}{bad}")
    asked = [a for a in answers if a.version is not None]
    if not asked:
        return Report(tuple(lines), tuple(warnings), tuple(problems))
    if running is None:
        lines.append("members: not reachable (the version change is checked once they answer)")
    elif not running:
        lines.append("members: none running yet")
    else:
        lines.append("members run: " + ", ".join(f"{n} {v}" for n, v in running))
        versions = [v for _, text in running if (v := parse_version(text)) is not None]
        for a in asked if versions else ():
            assert a.version is not None
            verdict = cluster_path(versions, a.version, facts)
            if isinstance(verdict, Refused):
                problems.append(Problem(file, a.key, f"{a.where}: refused: {verdict.reason}"))
            else:
                lines.append(f"version change: {a.at}allowed: {verdict.reason}"
                             + (f" ({verdict.note})" if verdict.note else ""))
    return Report(tuple(lines), tuple(warnings), tuple(problems))

"""check-config's version report (ckeetcd.core.binaryreport), case by case: pure, no
etcd and no SSH; the answers stand for what the local binary and each SSH node said.
The real thing over SSH: tests/test_multihost_rolling.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ckeetcd.core.binaryreport import BinaryAnswer, Report, binary_report
from ckeetcd.core.config import Problem, SSHConfig, parse_config
from ckeetcd.core.etcdversions import facts_from_flags, parse_version
from ckeetcd.nodes.sshnode import Result, SSHError, SSHNode
from ckeetcd.nodes.sshversion import ssh_binaries, ssh_binary_answers
from tests.test_ssh_shell import ShellNode

F = "/etc/ckeetcd/ckeetcd.toml"
V = parse_version
LOCAL = BinaryAnswer("etcd.binary", "/opt/etcd", version=V("3.5.30"))
RUN_351 = [("m1", "3.5.1"), ("m2", "3.5.1"), ("m3", "3.5.1")]
RUN_3516 = [("h1", "3.5.16"), ("h2", "3.5.16")]


def node(host: str, member: str, version: str = "", key: str = "ssh.etcd_binary",
         binary: str = "/usr/local/bin/etcd", **kw: str) -> BinaryAnswer:
    return BinaryAnswer(key, binary, node=f"{host} ({member})",
                        version=V(version) if version else None, **kw)


def errors(r: Report) -> list[str]:
    return [str(p) for p in r.problems]


def test_local_binary_reads_as_before() -> None:
    r = binary_report(F, [LOCAL], RUN_351)
    assert r.lines == ("etcd binary: /opt/etcd: etcd 3.5.30", "members run: m1 3.5.1, m2 3.5.1, "
                       "m3 3.5.1", "version change: allowed: 3.5.1 -> 3.5.30: a patch change "
                       "within 3.5 (up); same data format (https://etcd.io/docs/v3.6/upgrades/"
                       "upgrading-etcd/, \"Patch upgrade\")")
    assert r.problems == () and r.warnings == ()


def test_local_downgrade_is_a_problem_of_etcd_binary() -> None:
    r = binary_report(F, [BinaryAnswer("etcd.binary", "/e34", version=V("3.4.23"))], RUN_351)
    [p] = r.problems
    assert (p.file, p.key) == (F, "etcd.binary")
    assert p.message.startswith("/e34: refused: 3.5.1 -> 3.4.23 is a minor downgrade")
    assert "ckeetcd restore" in p.message


# (what the nodes said, what members run, error lines, other lines that must be there,
#  warnings that must be there)
CASES = {
    "nodes on one release make one line": (
        [node("10.0.0.1", "h1", "3.5.30"), node("10.0.0.2", "h2", "3.5.30")], RUN_3516, [],
        ["etcd binary: /usr/local/bin/etcd on 10.0.0.1 (h1), 10.0.0.2 (h2): etcd 3.5.30",
         "version change: /usr/local/bin/etcd on 10.0.0.1 (h1), 10.0.0.2 (h2): allowed: "
         "3.5.16 -> 3.5.30: a patch change"], []),
    "a member's own binary refused names its key and node": (
        [node("10.0.0.1", "h1", "3.5.30"),
         node("10.0.0.2", "h2", "3.4.23", key="members[1].etcd_binary", binary="/e34")],
        RUN_3516,
        [f"{F}: members[1].etcd_binary: /e34 on 10.0.0.2 (h2): refused: 3.5.16 -> 3.4.23 is "
         "a minor downgrade"],
        ["etcd binary: /e34 on 10.0.0.2 (h2): etcd 3.4.23"], []),
    "skipping a minor is refused": (
        [node("10.0.0.1", "h1", "3.6.0")], [("h1", "3.4.23")],
        [f"{F}: ssh.etcd_binary: /usr/local/bin/etcd on 10.0.0.1 (h1): refused: 3.4.23 -> "
         "3.6.0 skips 3.5"], [], []),
    "an unreachable node is a warning, not a problem": (
        [node("10.0.0.1", "h1", "3.5.30"),
         node("10.0.0.3", "h3", unreachable="ssh 10.0.0.3: unreachable: timed out")],
        RUN_3516, [], ["members run: h1 3.5.16, h2 3.5.16"],
        [f"{F}: ssh.etcd_binary: /usr/local/bin/etcd on 10.0.0.3 (h3): not asked: ssh "
         "10.0.0.3: unreachable: timed out (checked once the node answers)"]),
    "only unreachable nodes: members are not asked": (
        [node("10.0.0.3", "h3", unreachable="ssh 10.0.0.3: auth: key refused")], RUN_3516,
        [], [], ["not asked: ssh 10.0.0.3: auth: key refused"]),
    "a binary missing on a node that answers is a problem": (
        [node("10.0.0.2", "h2", key="members[1].etcd_binary", binary="/opt/etcd-3.5.99",
              missing="stat: cannot statx '/opt/etcd-3.5.99': No such file or directory")],
        RUN_3516,
        [f"{F}: members[1].etcd_binary: /opt/etcd-3.5.99 on 10.0.0.2 (h2): stat: cannot "
         "statx '/opt/etcd-3.5.99': No such file or directory"], [], []),
    "a binary that names no version is noted, not checked": (
        [node("10.0.0.1", "h1", unknown="`/usr/local/bin/etcd --version` on 10.0.0.1 "
              "exited 126: permission denied")], RUN_3516, [],
        ["etcd binary: /usr/local/bin/etcd on 10.0.0.1 (h1): `/usr/local/bin/etcd --version` "
         "on 10.0.0.1 exited 126: permission denied (not checked)"], []),
    "members that do not answer: nothing refused": (
        [node("10.0.0.1", "h1", "3.4.23")], None, [],
        ["members: not reachable (the version change is checked once they answer)"], []),
    "no member running yet: nothing refused": (
        [node("10.0.0.1", "h1", "3.4.23")], [], [], ["members: none running yet"], []),
    "a known-bad target is a warning with its key and node": (
        [node("10.0.0.1", "h1", "3.5.1")], RUN_3516, [],
        ["version change: /usr/local/bin/etcd on 10.0.0.1 (h1): allowed: 3.5.16 -> 3.5.1"],
        [f"{F}: ssh.etcd_binary: /usr/local/bin/etcd on 10.0.0.1 (h1): etcd 3.5.1 is a "
         "known-bad release"]),
    "local and SSH binaries are checked alike": (
        [BinaryAnswer("etcd.binary", "/e34", version=V("3.4.23")),
         node("10.0.0.2", "h2", "3.4.23")], RUN_3516,
        [f"{F}: etcd.binary: /e34: refused: 3.5.16 -> 3.4.23",
         f"{F}: ssh.etcd_binary: /usr/local/bin/etcd on 10.0.0.2 (h2): refused: 3.5.16 -> "
         "3.4.23"], [], []),
}


@pytest.mark.parametrize("case", CASES)
def test_report(case: str) -> None:
    answers, running, want_errors, want_lines, want_warnings = CASES[case]
    r = binary_report(F, answers, running)
    got = errors(r)
    assert len(got) == len(want_errors), got
    for g, w in zip(got, want_errors, strict=True):
        assert g.startswith(w), (g, w)
    for w in want_lines:
        assert any(line.startswith(w) for line in r.lines), (w, r.lines)
    for w in want_warnings:
        assert any(w in x for x in r.warnings), (w, r.warnings)


def test_prerequisites_of_a_minor_step_count_for_nodes_too() -> None:
    r = binary_report(F, [node("10.0.0.1", "h1", "3.6.0")], [("h1", "3.5.32")],
                      facts_from_flags(["--enable-v2=true"]))
    assert [p.key for p in r.problems] == ["ssh.etcd_binary"]
    assert "no longer accepts --enable-v2" in r.problems[0].message


def test_each_node_and_binary_is_asked_once_under_the_key_that_names_it() -> None:
    config = parse_config({
        "cluster": {"name": "c", "state_dir": "/s", "runtime": "ssh"},
        "ssh": {"etcd_binary": "/opt/etcd", "identity_file": "id", "known_hosts": "kh"},
        "members": [{"name": "a", "address": "10.0.0.1"},
                    {"name": "b", "address": "10.0.0.2", "etcd_binary": "/opt/etcd-new"},
                    {"name": "c", "address": "10.0.0.3", "ssh_host": "10.9.0.1"},
                    {"name": "e", "address": "10.0.0.5", "ssh_host": "10.9.0.1"},
                    {"name": "d", "address": "10.0.0.4", "runtime": "local"}]},
        Path(F))
    asked = ssh_binaries(config)
    assert {k: [m.name for m in v] for k, v in asked.items()} == {
        ("10.0.0.1", "/opt/etcd", "ssh.etcd_binary"): ["a"],
        ("10.0.0.2", "/opt/etcd-new", "members[1].etcd_binary"): ["b"],
        ("10.9.0.1", "/opt/etcd", "ssh.etcd_binary"): ["c", "e"]}


def test_problem_reads_as_every_config_problem() -> None:
    r = binary_report(F, [node("10.0.0.2", "h2", "3.4.23")], RUN_3516)
    assert r.problems[0] == Problem(F, "ssh.etcd_binary", r.problems[0].message)


class Unreachable(SSHNode):
    async def run(self, command: str, stdin: bytes | None = None,
                  timeout: float | None = None, check: bool = True) -> Result:
        raise SSHError(self.host, "unreachable", "connection refused")


def test_each_node_is_asked_with_the_daemons_lines(tmp_path: Path) -> None:
    """ssh_binary_answers runs the daemon's inspection lines on each node (here a local
    sh per "host"): a version, a binary that is not there, one that names no version,
    and a node that does not answer, each told apart."""
    good = tmp_path / "etcd"
    good.write_text("#!/bin/sh\necho 'etcd Version: 3.5.30'\necho 'Git SHA: x'\n")
    odd = tmp_path / "odd"
    odd.write_text("#!/bin/sh\necho 'not etcd'\n")
    for f in (good, odd):
        f.chmod(0o755)
    config = parse_config({
        "cluster": {"name": "c", "state_dir": "/s", "runtime": "ssh"},
        "ssh": {"etcd_binary": str(good), "identity_file": "id", "known_hosts": "kh"},
        "members": [{"name": "a", "address": "10.0.0.1"},
                    {"name": "b", "address": "10.0.0.2",
                     "etcd_binary": str(tmp_path / "gone")},
                    {"name": "c", "address": "10.0.0.3", "etcd_binary": str(odd)},
                    {"name": "d", "address": "10.0.0.4"}]}, Path(F))

    def node(host: str, cfg: SSHConfig) -> SSHNode:
        return Unreachable(host, cfg) if host == "10.0.0.4" else ShellNode(host, cfg)

    got = {a.node: a for a in asyncio.run(ssh_binary_answers(config, node))}
    assert got["10.0.0.1 (a)"].version == V("3.5.30") and got["10.0.0.1 (a)"].key == \
        "ssh.etcd_binary"
    assert "No such file" in got["10.0.0.2 (b)"].missing
    assert got["10.0.0.2 (b)"].key == "members[1].etcd_binary"
    assert "names no etcd version" in got["10.0.0.3 (c)"].unknown
    assert got["10.0.0.4 (d)"].unreachable == "ssh 10.0.0.4: unreachable: connection refused"
    assert got["10.0.0.4 (d)"].version is None

"""What a restart would change for an SSH member: the runtime's inspect, its shell
scripts run by a local `sh` (tests/test_ssh_shell.py's ShellNode), with the real
etcd 3.5.16 and 3.5.30 binaries answering `--version`.

The member's "etcd" is a wrapper that hands `--version` to a real etcd (and counts
the calls) and otherwise stays up: what is looked at is the start record, the
binary's version and its cache, not raft (tests/test_multihost_rolling.py rolls a
real cluster over SSH).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest

from ckeetcd.core.config import EtcdConfig
from ckeetcd.core.model import Runtime
from ckeetcd.nodes.ssh import SSHRuntime
from ckeetcd.nodes.sshfingerprint import recorded_cmd
from tests.test_ssh_shell import _spec, shell_runtime
from tests.test_versions import ETCD_DIR

REAL = {v: ETCD_DIR / v / "etcd" for v in ("3.5.16", "3.5.30")}
pytestmark = pytest.mark.skipif(not all(p.exists() for p in REAL.values()),
                                reason="scripts/fetch-etcd 3.5.16 3.5.30 first")


def wrapper(path: Path, version: str) -> Path:
    """An "etcd" on the node: `--version` is the real one's (counted), else it waits."""
    path.write_text(f"#!/bin/sh\nif [ \"$1\" = --version ]; then echo x >> {path}.asked; "
                    f"exec {REAL[version]} --version; fi\nexec sleep 300\n")
    path.chmod(0o755)
    return path


def asked(path: Path) -> int:
    try:
        return len(Path(f"{path}.asked").read_text().splitlines())
    except FileNotFoundError:
        return 0


def inspect(rt: SSHRuntime) -> Runtime:
    return asyncio.run(rt.inspect("cp1"))


@pytest.fixture
def started(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A member started over "SSH" on the 3.5.16 wrapper; stopped at the end."""
    old = wrapper(tmp_path / "etcd-3.5.16", "3.5.16")
    rt = shell_runtime(tmp_path / "root", etcd_binary=str(old))
    asyncio.run(rt.start(_spec()))
    yield rt, old
    asyncio.run(rt.stop("cp1", timeout=0))


def test_a_member_started_over_ssh_reports_its_binary_version_and_no_change(
        started: tuple[SSHRuntime, Path]) -> None:
    rt, old = started
    r = inspect(rt)
    assert r.running and r.wanted_version == "3.5.16"
    assert r.flag_change == () and r.change_unknown == ""
    record = (Path(rt.cfg.data_root) / "cp1" / "etcd.cmd").read_text()
    assert recorded_cmd(record, env_file=False) == rt.command_line(_spec())
    for _ in range(3):  # asked once for this binary, not every inspection
        assert inspect(rt).wanted_version == "3.5.16"
    assert asked(old) == 1


def test_a_new_binary_per_member_or_for_all_and_changed_flags_are_reported(
        started: tuple[SSHRuntime, Path], tmp_path: Path) -> None:
    rt, _ = started
    new = wrapper(tmp_path / "etcd-3.5.30", "3.5.30")
    rt.binaries["cp1"] = str(new)  # [[members]] etcd_binary
    assert inspect(rt).wanted_version == "3.5.30"
    rt.binaries.clear()
    rt.cfg = dataclasses.replace(rt.cfg, etcd_binary=str(new))  # [ssh] etcd_binary
    assert inspect(rt).wanted_version == "3.5.30" and asked(new) == 1
    rt.etcd = EtcdConfig(heartbeat_interval_ms=150, election_timeout_ms=1500)
    r = inspect(rt)
    assert r.flag_change == ("--heartbeat-interval=100 -> --heartbeat-interval=150",
                             "--election-timeout=1000 -> --election-timeout=1500")
    assert r.running and r.change_unknown == ""


def test_a_binary_replaced_in_place_is_asked_again(
        started: tuple[SSHRuntime, Path]) -> None:
    rt, old = started
    assert inspect(rt).wanted_version == "3.5.16"
    wrapper(old, "3.5.30")  # the package upgrade rewrote the same path
    os.utime(old, ns=(1, 1))
    assert inspect(rt).wanted_version == "3.5.30" and asked(old) == 2


@pytest.mark.parametrize(("content", "said"), [
    (None, "No such file"),
    ("#!/bin/sh\necho 'segfault' >&2\nexit 3\n", "exited 3: segfault"),
    ("#!/bin/sh\necho 'etcdctl version: 3.5.30'\n", "names no etcd version"),
])
def test_a_missing_or_failing_binary_is_said_never_taken_for_no_change(
        started: tuple[SSHRuntime, Path], tmp_path: Path, content: str | None, said: str,
) -> None:
    rt, _ = started
    bad = tmp_path / "other" / "etcd"
    if content is not None:
        bad.parent.mkdir()
        bad.write_text(content)
        bad.chmod(0o755)
    rt.binaries["cp1"] = str(bad)
    r = inspect(rt)
    assert r.running and r.wanted_version == ""
    assert said in r.change_unknown and str(bad) in r.change_unknown


def test_the_unit_environment_file_is_read_back_as_the_command_line() -> None:
    rt = shell_runtime(Path("/var/lib/m"), etcd_binary="/opt/etcd-3.5.30/etcd")
    cmd = rt.command_line(_spec())
    assert recorded_cmd(rt.env_content(_spec()).decode(), env_file=True) == cmd
    assert recorded_cmd("# nothing\n", env_file=True) is None
    assert recorded_cmd("not json", env_file=False) is None

"""The SSH runtime's shell scripts, run by a local `sh` instead of over SSH.

Only the transport is replaced (no sshd is needed): the command lines the
runtime builds run unchanged, on real files in a temp dir.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from ckeetcd.core.config import EtcdConfig, SSHConfig
from ckeetcd.core.model import MemberExit
from ckeetcd.nodes.base import MemberSpec
from ckeetcd.nodes.ssh import SSHRuntime
from ckeetcd.nodes.sshnode import Result, SSHError, SSHNode

HOST = "10.0.0.1"


class ShellNode(SSHNode):
    """Runs each command with /bin/sh on this machine."""

    async def run(self, command: str, stdin: bytes | None = None,
                  timeout: float | None = None, check: bool = True) -> Result:
        p = await asyncio.to_thread(subprocess.run, ["/bin/sh", "-c", command], input=stdin,
                                    capture_output=True, timeout=timeout or 30)
        result = Result(p.returncode, p.stdout, p.stderr)
        if check and result.status != 0:
            raise SSHError(self.host, "command", f"exit {result.status}: {p.stderr[-500:]!r}")
        return result


def shell_runtime(root: Path, **ssh: object) -> SSHRuntime:
    cfg = SSHConfig(data_root=str(root), **ssh)  # type: ignore[arg-type]
    rt = SSHRuntime(cfg, EtcdConfig(), {"cp1": HOST})
    rt._nodes[HOST] = ShellNode(HOST, cfg)
    return rt


def test_archives_are_listed_with_their_size_and_pruned_over_ssh(tmp_path: Path) -> None:
    rt = shell_runtime(tmp_path)
    d = tmp_path / "cp1"
    names = ["data.removed-20240101T000000.000001Z", "data.removed-20240101T000000.000002Z",
             "data.removed-20250101T000000.000000Z", "data.before-restore-20200101T0000Z",
             "data.removed-by-hand"]
    for n in names:
        (d / n / "member").mkdir(parents=True)
        (d / n / "member" / "f").write_bytes(b"x" * 200_000)
    (d / "data" / "member").mkdir(parents=True)
    (d / "data.restoring").mkdir()
    (d / "data.removed-20000101T000000.000000Z").symlink_to(d / "data")  # not followed

    found = asyncio.run(rt.archives("cp1"))
    assert [a.name for a in found] == sorted(names)
    assert all(a.bytes >= 200_000 for a in found)
    gone = asyncio.run(rt.prune_archives("cp1", 1))
    assert [a.name for a in gone] == names[:2]
    left = sorted(p.name for p in d.iterdir())
    assert left == sorted(["data", "data.restoring", "data.removed-20000101T000000.000000Z",
                           *names[2:]])
    assert (d / "data" / "member").is_dir()
    assert asyncio.run(rt.prune_archives("cp1", 1)) == []
    assert asyncio.run(shell_runtime(tmp_path / "none").archives("cp1")) == []


def _spec(name: str = "cp1") -> MemberSpec:
    return MemberSpec(name=name, client_url="https://127.0.0.1:1", peer_url="https://127.0.0.1:2",
                      cluster_token="t", initial_cluster=((name, "https://127.0.0.1:2"),),
                      initial_state="new")


def test_an_etcd_that_exits_at_once_is_seen_stopped_with_its_log_tail_over_ssh(
        tmp_path: Path) -> None:
    etcd = tmp_path / "etcd"
    etcd.write_text("#!/bin/sh\necho 'starting'\necho 'panic: failed to open database' >&2\n"
                    "exit 2\n")
    etcd.chmod(0o755)
    rt = shell_runtime(tmp_path / "root", etcd_binary=str(etcd))

    async def go() -> tuple[int, bool, MemberExit]:
        pid = await rt.start(_spec())
        for _ in range(200):
            if not (await rt.inspect("cp1")).running:
                break
            await asyncio.sleep(0.02)
        return pid, (await rt.inspect("cp1")).running, await rt.exit_info("cp1")

    pid, running, info = asyncio.run(go())
    assert pid > 0 and not running
    assert info.status.startswith("unknown (") and info.code is None
    assert info.log_tail == ("starting", "panic: failed to open database")
    assert info.reason == "panic: failed to open database"
    log = (tmp_path / "root" / "cp1" / "etcd.log").read_text()
    assert log.startswith("--- ") and " start (new)" in log.splitlines()[0]


def test_a_big_etcd_log_is_rotated_when_the_member_starts_over_ssh(tmp_path: Path) -> None:
    etcd = tmp_path / "etcd"
    etcd.write_text("#!/bin/sh\necho 'run 2'\nexit 1\n")
    etcd.chmod(0o755)
    rt = shell_runtime(tmp_path / "root", etcd_binary=str(etcd))
    rt.log_max_bytes = 1000
    d = tmp_path / "root" / "cp1"
    d.mkdir(parents=True)
    (d / "etcd.log").write_text("old line\n" * 200)  # 1800 bytes: past the limit
    asyncio.run(rt.start(_spec()))
    assert (d / "etcd.log.1").read_text() == "old line\n" * 200
    assert "old line" not in (d / "etcd.log").read_text()
    small = "x\n" * 10
    (d / "etcd.log.1").unlink()
    (d / "etcd.log").write_text(small)
    asyncio.run(rt.start(_spec()))
    assert (d / "etcd.log").read_text().startswith(small) and not (d / "etcd.log.1").exists()


class _ClosingConnection:
    """What asyncssh does when the connection closes while a channel opens."""

    def is_closed(self) -> bool:
        return False

    async def run(self, *args: object, **kwargs: object) -> object:
        raise AssertionError  # asyncssh channel.get_connection: assert self._conn

    def close(self) -> None:
        pass


def test_a_connection_lost_while_opening_a_channel_is_an_unreachable_node() -> None:
    """It crashed a daemon in the lab (load 25 on 2 cores): now an SSHError like any
    lost connection, and the next command connects afresh."""
    node = SSHNode(HOST, SSHConfig())
    node._conn = _ClosingConnection()
    with pytest.raises(SSHError) as e:
        asyncio.run(node.run("true"))
    assert e.value.kind == "unreachable" and "connection lost" in str(e.value)
    assert node._conn is None

"""The SSH runtime's shell scripts, run by a local `sh` instead of over SSH.

Only the transport is replaced (no sshd is needed): the command lines the
runtime builds run unchanged, on real files in a temp dir.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from ckeetcd.config import EtcdConfig, SSHConfig
from ckeetcd.nodes.ssh import Result, SSHError, SSHNode, SSHRuntime

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

"""Members on other hosts over SSH, one daemon per node (network-namespace lab)."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.multihost import MultiCluster
from tests.netns import Lab


def test_bootstrap_over_ssh_single_daemon(lab: Lab, tmp_path: Path) -> None:
    c = MultiCluster(lab, tmp_path / "mc", ["h1", "h2", "h3"], ["h1"])
    c.start_daemon("h1")
    c.wait_healthy(["h1", "h2", "h3"])
    for m in ("h1", "h2", "h3"):
        pid = c.member_pid(m)
        assert pid is not None
        assert c.pid_host(pid) == m, f"{m}'s etcd runs outside its host"
        key = c.member_dir(m) / "tls" / "server.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert not (c.member_dir(m) / "tls" / "ca.key").exists()
    r = c.etcdctl("h4", "auth", "status")
    assert "Authentication Status: true" in r.stdout, r.stderr

"""Members on other hosts over SSH, one daemon per node (network-namespace lab)."""

from __future__ import annotations

import stat
import time
from pathlib import Path

from ckeetcd.election import NODE_LOCAL_OPS
from tests.harness import wait_for
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


def three_daemons(lab: Lab, tmp_path: Path, members: list[str] | None = None,
                  daemon_extra: str = "") -> MultiCluster:
    c = MultiCluster(lab, tmp_path / "mc", members or ["h1", "h2", "h3"], ["h1", "h2", "h3"],
                     daemon_extra=daemon_extra)
    c.share_ca()
    c.start_daemons()
    c.wait_healthy(c.members)
    wait_for(c.leader, 30, "a leader daemon", abort=c.died)
    return c


def test_three_daemons_elect_one_leader_and_hand_over_on_kill(lab: Lab, tmp_path: Path) -> None:
    c = three_daemons(lab, tmp_path)
    first = c.leader()
    assert first is not None
    # Only the bootstrapper (h1, the first member) and the leader changed the
    # cluster; the others only kept their own node's etcd servers file.
    changes = [(d, e["op"]) for d, e in c.all_events("op") if e["op"] not in NODE_LOCAL_OPS]
    assert {d for d, _ in changes} <= {"h1", first}, changes
    want = [c.url(m) for m in ("h1", "h2", "h3")]
    wait_for(lambda: all(c.servers(d) == want for d in c.daemon_hosts), 20,
             "every daemon's etcd servers file lists the three members")
    marks = c.marks()
    c.kill_daemon(first)
    killed_at = time.monotonic()
    new = wait_for(lambda: c.leader() if c.leader() != first else None, 30,
                   "a new leader", abort=c.died)
    took = time.monotonic() - killed_at
    assert took < 3 + 2 + 2, f"takeover took {took:.1f}s with lease_ttl 3"
    assert new != first
    c.wait_healthy(["h1", "h2", "h3"], host=new)
    assert [e for e in c.events(new, "leadership_acquired", marks[new])]

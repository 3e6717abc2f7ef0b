"""The namespace lab itself: private subnet, sshd per host, cleanup."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests import netns
from tests.harness import wait_for
from tests.netns import Lab


def _ssh(lab: Lab, src: str, dst: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return lab.exec(src, "ssh", "-i", str(lab.identity), "-o", "BatchMode=yes",
                    "-o", f"UserKnownHostsFile={lab.known_hosts}",
                    "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=3",
                    f"root@{lab.host(dst).address}", *cmd, timeout=20)


def test_hosts_reach_each_other_over_ssh_only_inside(lab: Lab) -> None:
    r = _ssh(lab, "h2", "h1", "ip", "-br", "addr", "show", "eth0")
    assert r.returncode == 0, r.stderr
    assert lab.host("h1").address in r.stdout  # the command ran on h1
    # the subnet does not exist outside the lab's namespaces
    outside = subprocess.run(["ip", "route", "get", lab.host("h1").address],
                             capture_output=True, text=True)
    assert "eth0" not in outside.stdout or "dev br0" not in outside.stdout
    assert lab.subnet not in subprocess.run(["ip", "-br", "addr"], capture_output=True,
                                            text=True).stdout


def test_link_down_cuts_a_host_off(lab: Lab) -> None:
    lab.link("h3", up=False)
    r = _ssh(lab, "h1", "h3", "true")
    assert r.returncode != 0
    lab.link("h3", up=True)
    wait_for(lambda: _ssh(lab, "h1", "h3", "true").returncode == 0, 20, "h3 reachable again")


def test_cleanup_removes_namespaces_and_processes(tmp_path: Path) -> None:
    reason = netns.available()
    if reason:
        import pytest

        pytest.skip(reason)
    lab = Lab(tmp_path / "lab", hosts=2).start()
    sshd = [h.sshd.pid for h in lab.hosts.values() if h.sshd]
    sleeper = lab.popen("h1", ["sleep", "300"], tmp_path / "sleep.log")
    lab.cleanup()
    assert not [ns for ns in netns._namespaces() if ns.startswith(lab.tag)]
    assert sleeper.wait(5) is not None
    assert all(not Path(f"/proc/{p}").exists() for p in sshd)

"""Members on real etcd against a running daemon: stop-members, removed data, crash loops."""

from __future__ import annotations

from tests.harness import Cluster, wait_for

NAMES = ["m1", "m2", "m3"]


def test_stop_members_refuses_beside_a_running_daemon_unless_paused(cluster: Cluster) -> None:
    assert cluster.daemon is not None
    pids = {n: cluster.member_pid(n) for n in NAMES}
    assert all(pids.values())
    r = cluster.cli("stop-members")
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"pid {cluster.daemon.pid}" in r.stderr and "daemon.lock" in r.stderr, r.stderr
    assert "stop the daemon first" in r.stderr and "ckeetcd pause" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert {n: cluster.member_pid(n) for n in NAMES} == pids, "a member was stopped"

    # Paused, the daemon keeps its hands off: stopping is allowed and they stay down.
    assert cluster.cli("pause", "--reason", "disk swap").returncode == 0
    mark = cluster.mark()
    wait_for(lambda: [e for e in cluster.events("cycle", since=mark) if e["phase"] == "paused"],
             20, "a paused cycle", abort=cluster.daemon_died)
    r = cluster.cli("stop-members")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(line for line in r.stdout.splitlines() if line.startswith("stopped")) == \
        [f"stopped {n}" for n in NAMES]
    assert "ckeetcd resume" in r.stdout
    mark = cluster.mark()
    wait_for(lambda: len([e for e in cluster.events("cycle", since=mark)
                          if e["phase"] == "paused"]) >= 2, 20, "two paused cycles after",
             abort=cluster.daemon_died)
    assert all(cluster.member_pid(n) is None for n in NAMES), "restarted while paused"
    assert cluster.cli("resume").returncode == 0
    cluster.wait_healthy(NAMES)

    # Without a daemon it works as before.
    cluster.stop_daemon()
    r = cluster.cli("stop-members")
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(cluster.member_pid(n) is None for n in NAMES)

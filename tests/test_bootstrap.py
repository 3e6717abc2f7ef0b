"""Bootstrap on real etcd: TLS everywhere, RBAC on, members outlive the daemon."""

from __future__ import annotations

from tests.harness import Cluster, wait_for


def test_bootstrap_lists_three_started_members(cluster: Cluster) -> None:
    r = cluster.etcdctl("member", "list")
    assert r.returncode == 0, r.stderr
    rows = [line.split(", ") for line in r.stdout.strip().splitlines()]
    assert sorted(row[2] for row in rows) == ["m1", "m2", "m3"]
    assert all(row[1] == "started" for row in rows)
    assert all(row[5] == "false" for row in rows)  # no learner left
    status = cluster.etcdctl("auth", "status")
    assert "Authentication Status: true" in status.stdout


def test_restarted_daemon_adopts_running_members(cluster: Cluster) -> None:
    pids = {n: cluster.member_pid(n) for n in ("m1", "m2", "m3")}
    assert all(pids.values())
    cluster.stop_daemon(sig=9)
    mark = cluster.mark()
    cluster.start_daemon()
    wait_for(lambda: [e for e in cluster.events("cycle", since=mark) if e["phase"] == "steady"],
             30, "a steady cycle from the restarted daemon")
    assert not [e for e in cluster.events("op", since=mark)], "restarted daemon ran ops"
    assert {n: cluster.member_pid(n) for n in ("m1", "m2", "m3")} == pids
    assert cluster.healthy_names() == {"m1", "m2", "m3"}


def test_member_without_pidfile_is_adopted_not_started_twice(cluster: Cluster) -> None:
    """A daemon killed between spawning etcd and writing its pidfile loses track of it."""
    pid = cluster.member_pid("m2")
    assert pid
    cluster.stop_daemon(sig=9)
    (cluster.state_dir / "members" / "m2" / "etcd.pid").unlink()
    mark = cluster.mark()
    cluster.start_daemon()
    wait_for(lambda: [e for e in cluster.events("cycle", since=mark) if e["phase"] == "steady"],
             30, "a steady cycle")
    assert cluster.member_pid("m2") == pid
    assert not cluster.events("op", since=mark), "the orphaned member was started again"
    cluster.stop_daemon()  # stop-members refuses beside a running daemon
    r = cluster.cli("stop-members")
    assert "stopped m2" in r.stdout

"""The reconciler on real etcd: repairs and config-driven membership changes."""

from __future__ import annotations

import os
import shutil
import signal

from tests.harness import Cluster, Writer, wait_for


def test_killed_member_is_restarted_on_its_data(cluster: Cluster) -> None:
    pid = cluster.member_pid("m2")
    assert pid
    mark = cluster.mark()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: cluster.member_pid("m2") not in (None, pid), 30, "m2 restarted")
    cluster.wait_healthy(["m1", "m2", "m3"], timeout=30)
    ops = [e["op"] for e in cluster.events("op", since=mark)]
    assert ops == ["restart-member"]


def test_wiped_member_is_removed_and_added_fresh(cluster: Cluster) -> None:
    _, before = cluster.observe()
    old_id = next(m.id for m in before.members or () if m.name == "m3")
    pid = cluster.member_pid("m3")
    assert pid
    mark = cluster.mark()
    os.kill(pid, signal.SIGKILL)
    shutil.rmtree(cluster.data_dir("m3"))

    def rejoined() -> bool:
        _, obs = cluster.observe()
        m3 = next((m for m in obs.members or () if m.name == "m3"), None)
        return bool(m3 and m3.id != old_id and not m3.learner and obs.is_healthy(m3))

    wait_for(rejoined, 60, "m3 re-added with a new ID")
    cluster.wait_healthy(["m1", "m2", "m3"], timeout=30)
    ops = [e["op"] for e in cluster.events("op", since=mark) if e["outcome"] == "ok"]
    assert "remove-member" in ops and "add-member" in ops and "promote-member" in ops


def test_swap_in_config_replaces_member_in_seed_order(cluster: Cluster) -> None:
    mark = cluster.mark()
    cluster.write_config(["m1", "m2", "m4"])
    cluster.wait_healthy(["m1", "m2", "m4"], timeout=90)
    ops = [e["op"] for e in cluster.events("op", since=mark) if e["outcome"] == "ok"]
    assert ops == ["stop-member", "remove-member", "add-member", "start-member",
                   "promote-member"], ops
    r = cluster.etcdctl("member", "list")
    assert "m3" not in r.stdout and "m4" in r.stdout
    assert cluster.member_pid("m3") is None
    archived = list((cluster.state_dir / "members" / "m3").glob("data.removed-*"))
    assert archived, "m3's data was not moved aside"


def test_writes_survive_kill_and_swap(cluster: Cluster) -> None:
    with Writer(cluster, lambda: ["m1", "m2"]) as writer:
        wait_for(lambda: len(writer.acked) > 20, 20, "writer running")
        pid = cluster.member_pid("m2")
        assert pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: cluster.member_pid("m2") not in (None, pid), 30, "m2 restarted")
        cluster.wait_healthy(["m1", "m2", "m3"], timeout=30)
        cluster.write_config(["m1", "m2", "m4"])
        cluster.wait_healthy(["m1", "m2", "m4"], timeout=90)
        count = len(writer.acked)
        wait_for(lambda: len(writer.acked) > count + 20, 20, "writer still writing")
    assert len(writer.acked) > 100
    assert writer.lost("m4") == []


def test_second_daemon_on_same_state_dir_refuses(cluster: Cluster) -> None:
    r = cluster.cli("run", "--log-format", "json")
    assert r.returncode == 1
    assert "state_dir_locked" in r.stderr

"""Members on real etcd against a running daemon: stop-members, removed data, crash loops."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

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


def _fake_archive(path: Path, size: int = 1 << 20) -> None:
    (path / "member" / "wal").mkdir(parents=True)
    (path / "member" / "wal" / "0.wal").write_bytes(b"\0" * size)


def test_removed_members_keep_the_newest_archives_at_removal_and_at_start(
        make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(extra="[maintenance]\nremoved_data_keep = 2\n")
    c.start_daemon()
    c.wait_healthy(NAMES)
    m3 = c.state_dir / "members" / "m3"
    # two earlier removals of m3, and dirs that are not removed-member archives
    older = [m3 / "data.removed-20200101T000000.000001Z",
             m3 / "data.removed-20200101T000000.000002Z"]
    others = [m3 / "data.before-restore-20200101T000000.000000Z", m3 / "data.removed-by-hand"]
    for path in older + others:
        _fake_archive(path)
    mark = c.mark()
    c.write_config(["m1", "m2", "m4"])
    c.wait_healthy(["m1", "m2", "m4"], timeout=90)
    c.ok_ops(mark, through="promote-member")
    removed = sorted(p.name for p in m3.glob("data.removed-2*"))
    assert len(removed) == 2 and removed[0] == older[1].name, removed  # the oldest went
    assert all(p.is_dir() for p in others)
    pruned = c.events("archives_pruned", since=mark)
    assert [(e["member"], e["removed"]) for e in pruned] == [("m3", [older[0].name])], pruned
    assert pruned[0]["freed_bytes"] >= 1 << 20

    st = json.loads(c.cli("status", "--output", "json").stdout)
    expected = sum(_du(m3 / n) for n in [*removed, *(p.name for p in others)])
    assert st["archived"] == {"m3": expected} and st["archived_bytes"] == expected, st
    text = c.cli("status").stdout
    assert "archived data" in text and "m3" in text, text

    # Keep none from now on: the daemon prunes when it starts.
    c.stop_daemon()
    c.write_config(["m1", "m2", "m4"], extra="[maintenance]\nremoved_data_keep = 0\n")
    mark = c.mark()
    c.start_daemon()
    wait_for(lambda: c.events("archives_pruned", since=mark), 30, "pruned at start",
             abort=c.daemon_died)
    assert list(m3.glob("data.removed-2*")) == []
    assert all(p.is_dir() for p in others)
    assert (c.data_dir("m1") / "member").is_dir()
    c.wait_healthy(["m1", "m2", "m4"])


def _du(path: Path) -> int:
    total = 0
    for p in [path, *path.rglob("*")]:
        if p != path:
            total += p.lstat().st_blocks * 512
    return total

"""Members on real etcd against a running daemon: stop-members, removed data, crash loops."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from ckeetcd.core import restarts
from ckeetcd.core.config import EtcdConfig
from ckeetcd.nodes import LocalRuntime, MemberSpec
from ckeetcd.nodes.local import resolve_etcd_binary
from ckeetcd.support.history import History
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


def _starts_of(c: Cluster, name: str, since: int) -> list[dt.datetime]:
    """When the daemon spawned `name` (the start-process steps that got that far)."""
    return [dt.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
            for e in c.events("op_step", since=since)
            if e["step"] == "start-process" and e["targets"] == name and e["outcome"] == "ok"]


def test_a_member_that_keeps_exiting_is_restarted_ever_more_slowly_and_comes_back_fixed(
        cluster: Cluster, tmp_path: Path) -> None:
    db = cluster.data_dir("m2") / "member" / "snap" / "db"
    cluster.stop_daemon()  # the members keep running
    pid = cluster.member_pid("m2")
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: cluster.member_pid("m2") is None, 10, "m2 gone")
    good = tmp_path / "db.good"
    shutil.copyfile(db, good)
    db.write_bytes(b"this is not a bbolt database\n" * 4096)  # etcd refuses to start on it

    mark = cluster.mark()
    cluster.start_daemon()
    starts = wait_for(lambda: s if len(s := _starts_of(cluster, "m2", mark)) >= 4 else None,
                      90, "four starts of m2", abort=cluster.daemon_died)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    for i, gap in enumerate(gaps, start=1):  # start n+1 waits delay(n) after start n
        assert gap >= 0.9 * restarts.delay(i), gaps
    assert all(b > a for a, b in itertools.pairwise(gaps)) and gaps[-1] >= 2 * gaps[0], gaps

    # Each start is an error with etcd's reason, and each exit is logged with its log tail.
    failed = [e for e in cluster.events("op", since=mark)
              if e["op"] == "restart-member" and e["targets"] == "m2"]
    assert failed and all(e["outcome"] == "error" for e in failed), failed
    assert "etcd exited (exit status" in failed[0]["error"], failed[0]
    assert "before it became healthy: panic: failed to open database" in failed[0]["error"]
    exits = [e for e in cluster.events("member_exited", since=mark) if e["member"] == "m2"]
    assert len(exits) >= 3, exits
    assert exits[0]["status"].startswith("exit status ") and exits[0]["code"] != 0
    assert "failed to open database: invalid database" in exits[0]["reason"], exits[0]
    assert any("failed to open database" in line for line in exits[0]["log_tail"])
    assert exits[0]["became_healthy"] is False and exits[-1]["next_start"]
    assert len(exits[0]["log_tail"]) <= 20 and all(len(x) <= 303 for x in exits[0]["log_tail"])
    held = [e for e in cluster.events("cycle", since=mark) if e["phase"] == "backoff"]
    assert held and "m2: restart in back-off until" in held[0]["reason"], held[:1]

    st = json.loads(cluster.cli("status", "--output", "json").stdout)
    m2 = next(r for r in st["members"] if r["name"] == "m2")
    assert m2["last_exit"]["status"].startswith("exit status "), m2
    assert m2["last_exit"]["log_tail"], m2
    assert "failed to open database" in m2["last_exit"]["reason"], m2
    text = cluster.cli("status").stdout
    assert "last exit: m2" in text and "failed to open database" in text, text

    # Fixed, it comes back at its next start, and nobody had to restart the daemon.
    mark = cluster.mark()
    shutil.copyfile(good, db)
    cluster.wait_healthy(NAMES, timeout=400)
    assert cluster.ok_ops(mark, through="restart-member", timeout=30) == ["restart-member"]
    started = cluster.events("member_started", since=mark)
    assert [e["healthy"] for e in started if e["member"] == "m2"] == [True]


def test_a_bootstrap_whose_etcd_exits_backs_off_and_forms_once_fixed(
        make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    """An etcd that refuses to start (here a wrapper that exits 3, as etcd does on a flag
    value it rejects): every member backs off, none is started in a tight loop."""
    # It parses flags like etcd (check-config, run and reload ask the binary whether
    # its flags parse: ckeetcd.nodes.etcdprobe), then refuses to start, as etcd does
    # on what no flag check can see (a damaged data dir, a port already taken).
    real = resolve_etcd_binary("")
    etcd = tmp_path / "etcd"
    etcd.write_text("#!/bin/sh\n"
                    f'case " $* " in *" --ckeetcd-probe-1 "*) exec "{real}" "$@";; esac\n'
                    "echo 'error: this etcd refuses to start' >&2\nexit 3\n")
    etcd.chmod(0o755)
    c = make_cluster(extra=f'[etcd]\nbinary = "{etcd}"\n')
    c.start_daemon()
    starts = wait_for(lambda: s if len(s := _starts_of(c, "m1", 0)) >= 4 else None,
                      90, "four starts of m1", abort=c.daemon_died)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert all(b > a for a, b in itertools.pairwise(gaps)) and gaps[-1] >= 2 * gaps[0], gaps
    assert gaps[0] >= 0.9 * restarts.delay(1), gaps
    ops = [e for e in c.events("op") if e["op"] == "start-member"]
    assert ops and all(e["outcome"] == "error" for e in ops)
    assert "etcd exited (exit status 3) before it became healthy: error: this etcd refuses " \
           "to start" in ops[0]["error"], ops[0]
    for name in ("m2", "m3"):  # each member has its own back-off, none runs free
        assert len(_starts_of(c, name, 0)) <= len(starts) + 1

    fixed = tmp_path / "etcd.new"
    fixed.write_text(f'#!/bin/sh\nexec "{real}" "$@"\n')
    fixed.chmod(0o755)
    fixed.rename(etcd)
    c.wait_healthy(NAMES, timeout=400)


def test_history_and_member_logs_are_bounded(tmp_path: Path) -> None:
    """history.jsonl becomes history.jsonl.1 at the limit; `read()` still sees both."""
    h = History(tmp_path, max_bytes=4096)
    for i in range(200):
        h.record(event="op-end", op="x", n=i)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["history.jsonl", "history.jsonl.1"], files
    assert all(p.stat().st_size < 4096 + 200 for p in tmp_path.iterdir())
    ns = [r["n"] for r in h.read()]
    assert ns == sorted(ns) and ns[-1] == 199 and len(ns) < 200  # the oldest went

    # A member's etcd.log is rotated when it is (re)started past the limit.
    etcd = tmp_path / "etcd"
    etcd.write_text("#!/bin/sh\necho 'new run'\nexit 1\n")
    etcd.chmod(0o755)
    rt = LocalRuntime(tmp_path / "state", EtcdConfig(binary=str(etcd)))
    rt.log_max_bytes = 65536
    log = rt.member_dir("m1") / "etcd.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"old\n" * 20000)
    spec = MemberSpec("m1", "https://127.0.0.1:1", "https://127.0.0.1:2", "t",
                      (("m1", "https://127.0.0.1:2"),), "new")
    asyncio.run(rt.start(spec))
    assert (log.parent / "etcd.log.1").read_bytes() == b"old\n" * 20000
    wait_for(lambda: "new run" in log.read_text(), 10, "the new run's output")
    assert b"old" not in log.read_bytes()

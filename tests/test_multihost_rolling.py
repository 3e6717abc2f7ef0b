"""A rolling upgrade and a rolling flag change over SSH, in the namespace lab.

Three hosts, three daemons (one per host, an elected leader), members reached
only over SSH, and the soak workload (tests/soak/workload.py) writing from a
fourth host all along. `[ssh] etcd_binary` goes from 3.5.16 to 3.5.30 (the
lab's hosts share the file system: the paths are scripts/fetch-etcd's), then
`[etcd] heartbeat_interval_ms`/`election_timeout_ms` change. Each change
restarts every member exactly once, the leader last after leadership moved,
and no acknowledged write is lost. One cluster for both changes.
"""

from __future__ import annotations

import base64
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from ckeetcd.support.files import write_private
from tests.harness import ckecli, wait_for
from tests.multihost import PY, MultiCluster
from tests.netns import Lab
from tests.soak import checker
from tests.soak.engine import ROOT, SOAK_PREFIX, SOAK_USER
from tests.soak.history import OK, read_history
from tests.soak.workload import WorkloadSpec
from tests.test_versions import E35, E3516

HOSTS = ["h1", "h2", "h3"]
USERS = f'[[users]]\nname = "{SOAK_USER}"\nprefix = "{SOAK_PREFIX}"\n'
SLOWER = "[etcd]\nheartbeat_interval_ms = 150\nelection_timeout_ms = 1500\n"

pytestmark = pytest.mark.skipif(not (E3516.exists() and E35.exists()),
                                reason="scripts/fetch-etcd 3.5.16 3.5.30 first")


def rolled(c: MultiCluster, since: dict[str, int]) -> list[tuple[str, str]]:
    """(op, target) of every successful stop, restart and move-leader, in time order,
    whichever daemon ran it."""
    steps = [(e["timestamp"], e["op"], e["targets"]) for _, e in c.all_events("op", since)
             if e["outcome"] == "ok" and e["op"] in ("stop-member", "restart-member",
                                                       "move-leader")]
    return [(op, t) for _, op, t in sorted(steps)]


def check_one_at_a_time(c: MultiCluster, since: dict[str, int], leader: str) -> None:
    """Each member stopped once and restarted right after; each stop decided while that
    member was a follower (the cycle's reason); the leader of the start last, after a
    move-leader was sent. A move-leader may end in error and still have moved the
    leadership (its daemon's lease ran short under load): its outcome is not asked."""
    steps = rolled(c, since)
    stops = [t for op, t in steps if op == "stop-member"]
    assert sorted(stops) == HOSTS and stops[-1] == leader, steps
    for i, (op, t) in enumerate(steps):
        if op == "stop-member":
            assert steps[i + 1] == ("restart-member", t), steps
    decided = [e["reason"] for _, e in c.all_events("cycle", since)
               if any(o.startswith("stop-member:") for o in e["ops"])]
    assert decided and all("follower" in r and "first" in r for r in decided), decided
    last_stop = max(e["timestamp"] for _, e in c.all_events("op", since)
                    if e["op"] == "stop-member" and e["targets"] == leader)
    assert any(e["timestamp"] < last_stop for _, e in c.all_events("op", since)
               if e["op"] == "move-leader"), steps


def etcd_leader(st: dict[str, Any]) -> str:
    return next(m["name"] for m in st["members"] if m["leader"])


def settled(c: MultiCluster, version: str) -> dict[str, Any] | None:
    """`ckeetcd status` once every member is healthy on `version` with nothing left to
    restart (None before)."""
    st = c.status()
    rows = [m for m in st["members"] if m["in_cluster"]]
    done = (sorted(m["name"] for m in rows) == HOSTS
            and all(m["healthy"] and m["version"] == version and m["restart_for"] is None
                    and m["restart_unknown"] is None for m in rows))
    return st if done else None


def quiet(c: MultiCluster, since: dict[str, int] | None, version: str) -> bool:
    """Every member restarted since `since` (None: none need be), answering on
    `version`, and the leader daemon's last cycle steady: the daemons' logs and one
    etcdctl, far cheaper than a `ckeetcd status` (which is asked once this holds)."""
    if since is not None and not (
            {t for op, t in rolled(c, since) if op == "restart-member"} >= set(HOSTS)):
        return False
    r = c.etcdctl("h4", "endpoint", "status", "-w", "json")
    if r.returncode != 0:
        return False
    if [e["Status"]["version"] for e in json.loads(r.stdout)] != [version] * len(HOSTS):
        return False
    lead = c.leader()
    return lead is not None and [e["phase"] for e in c.events(lead, "cycle")][-1:] == ["steady"]


def start_workload(c: MultiCluster, root: Path) -> Any:
    """The soak clients on h4, as the soak user, following h1's etcd servers file."""
    r = ckecli(c.config_path("h1"), "issue", "-ttl=2h", "-output=json", SOAK_USER)
    assert r.returncode == 0, r.stderr
    bundle = json.loads(r.stdout)
    certs = root / "certs"
    certs.mkdir(mode=0o700)
    (certs / "ca.crt").write_text(bundle["ca_certificate"])
    (certs / "soak.crt").write_text(bundle["certificate"])
    key = certs / "soak.key"
    write_private(key, bundle["private_key"].encode())
    spec = WorkloadSpec(servers_file=str(c.servers_file("h1")), ca=str(certs / "ca.crt"),
                        cert=str(certs / "soak.crt"), key=str(key), prefix=SOAK_PREFIX,
                        history=str(root / "history.jsonl"), run_id="sshroll", writers=2,
                        readers=1).write(root / "workload.json")
    return c.lab.popen("h4", [PY, "-m", "tests.soak.workload", str(spec)],
                       root / "workload.log", env={"PYTHONPATH": str(ROOT)})


def acked(root: Path) -> int:
    return sum(r.kind == "put" and r.outcome == OK
               for r in read_history(root / "history.jsonl"))


def stored(c: MultiCluster) -> dict[str, checker.Stored]:
    r = c.etcdctl("h4", "get", "--prefix", SOAK_PREFIX, "-w", "json")
    assert r.returncode == 0, r.stderr
    kvs = json.loads(r.stdout).get("kvs", [])
    return {base64.b64decode(kv["key"]).decode(): checker.Stored(
        base64.b64decode(kv.get("value", "")).decode(), kv["mod_revision"],
        kv["create_revision"], kv["version"]) for kv in kvs}


def test_rolling_upgrade_and_flag_change_over_ssh_with_writers(lab: Lab, tmp_path: Path,
                                                               ) -> None:
    c = MultiCluster(lab, tmp_path / "mc", HOSTS, HOSTS, extra=USERS,
                     etcd_binary=str(E3516))
    c.share_ca()
    c.start_daemons()
    wait_for(c.leader, 60, "a leader daemon", abort=c.died)
    st = wait_for(lambda: quiet(c, None, "3.5.16") and settled(c, "3.5.16"), 90,
                  "every member on 3.5.16", abort=c.died)
    work = tmp_path / "work"
    work.mkdir()
    clients = start_workload(c, work)
    try:
        wait_for(lambda: acked(work) >= 20, 60, "the writers acknowledged")

        # 1. The upgrade: the config names another binary; nothing else changes.
        marks, before, leader = c.marks(), acked(work), etcd_leader(st)
        c.etcd_binary = str(E35)
        c.write_config(HOSTS)
        st = wait_for(lambda: quiet(c, marks, "3.5.30") and settled(c, "3.5.30"), 240,
                      "every member on 3.5.30", abort=c.died)
        check_one_at_a_time(c, marks, leader)
        assert st["cluster_version"].startswith("3.5."), st["cluster_version"]
        for m in HOSTS:
            cmd = json.loads((c.member_dir(m) / "etcd.cmd").read_text())
            assert cmd[0] == str(E35) and c.pid_host(c.member_pid(m) or 0) == m
        wait_for(lambda: acked(work) > before + 20, 60, "writes after the upgrade")

        # 2. A flag change over SSH: each member restarted once more, the leader last.
        marks, leader = c.marks(), etcd_leader(st)
        c.extra = USERS + SLOWER
        c.write_config(HOSTS)
        wait_for(lambda: quiet(c, marks, "3.5.30") and settled(c, "3.5.30"), 240,
                 "every member restarted with the new flags", abort=c.died)
        check_one_at_a_time(c, marks, leader)
        for m in HOSTS:
            cmd = json.loads((c.member_dir(m) / "etcd.cmd").read_text())
            assert "--heartbeat-interval=150" in cmd and "--election-timeout=1500" in cmd
        wait_for(lambda: acked(work) > before + 40, 60, "writes after the flag change")
    finally:
        clients.send_signal(signal.SIGTERM)
        clients.wait(30)

    history = read_history(work / "history.jsonl")
    verdict = checker.check_writes(history, stored(c))
    assert verdict.violations == [], verdict.violations  # every acknowledged write is there
    assert verdict.acked > 60
    assert settled(c, "3.5.30") and c.died() is None

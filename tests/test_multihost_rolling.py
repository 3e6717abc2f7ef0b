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
from tests.test_rolling_real import check_one_at_a_time
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


def etcd_leader(st: dict[str, Any]) -> str:
    return next(m["name"] for m in st["members"] if m["leader"])


def settled(c: MultiCluster, version: str) -> bool:
    """Every member healthy on `version`, with nothing left to restart."""
    st = c.status()
    rows = [m for m in st["members"] if m["in_cluster"]]
    return (sorted(m["name"] for m in rows) == HOSTS
            and all(m["healthy"] and m["version"] == version and m["restart_for"] is None
                    and m["restart_unknown"] is None for m in rows))


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
    c.wait_healthy(HOSTS)
    wait_for(c.leader, 30, "a leader daemon", abort=c.died)
    wait_for(lambda: settled(c, "3.5.16"), 60, "every member on 3.5.16", abort=c.died)
    work = tmp_path / "work"
    work.mkdir()
    clients = start_workload(c, work)
    try:
        wait_for(lambda: acked(work) >= 20, 60, "the writers acknowledged")

        # 1. The upgrade: the config names another binary; nothing else changes.
        marks, before = c.marks(), acked(work)
        leader = etcd_leader(c.status())
        c.etcd_binary = str(E35)
        c.write_config(HOSTS)
        wait_for(lambda: settled(c, "3.5.30"), 240, "every member on 3.5.30", abort=c.died)
        check_one_at_a_time(rolled(c, marks), leader, HOSTS)
        st = c.status()
        assert st["cluster_version"].startswith("3.5."), st["cluster_version"]
        for m in HOSTS:
            cmd = json.loads((c.member_dir(m) / "etcd.cmd").read_text())
            assert cmd[0] == str(E35) and c.pid_host(c.member_pid(m) or 0) == m
        wait_for(lambda: acked(work) > before + 20, 60, "writes after the upgrade")

        # 2. A flag change over SSH: each member restarted once more, the leader last.
        marks, leader = c.marks(), etcd_leader(c.status())
        c.extra = USERS + SLOWER
        c.write_config(HOSTS)
        wait_for(lambda: all("--heartbeat-interval=150" in (c.member_dir(m) / "etcd.cmd")
                             .read_text() for m in HOSTS) and settled(c, "3.5.30"),
                 240, "every member restarted with the new flags", abort=c.died)
        check_one_at_a_time(rolled(c, marks), leader, HOSTS)
        wait_for(lambda: acked(work) > before + 40, 60, "writes after the flag change")
    finally:
        clients.send_signal(signal.SIGTERM)
        clients.wait(30)

    history = read_history(work / "history.jsonl")
    verdict = checker.check_writes(history, stored(c))
    assert verdict.violations == [], verdict.violations  # every acknowledged write is there
    assert verdict.acked > 60
    c.wait_healthy(HOSTS)
    assert c.died() is None

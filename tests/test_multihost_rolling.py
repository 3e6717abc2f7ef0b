"""A rolling upgrade and a rolling flag change over SSH, in the namespace lab; and
check-config asking each SSH node's etcd binary for its version.

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
from tests.test_rolling_real import check_rolled
from tests.test_versions import E34, E35, E3516

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
    """tests/test_rolling_real.py's check_rolled on the events of every daemon (in time
    order, whichever daemon ran them): each member once, followers first, the leader of
    the start last and only after a move-leader that ended well."""
    def merged(name: str) -> list[dict[str, Any]]:
        return [e for _, e in sorted(c.all_events(name, since),
                                     key=lambda de: str(de[1]["timestamp"]))]

    check_rolled(merged("op"), merged("op_step"), merged("cycle"), HOSTS)
    assert [t for op, t in rolled(c, since) if op == "stop-member"][-1] == leader


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


def test_check_config_asks_each_nodes_binary_over_ssh(lab: Lab, tmp_path: Path) -> None:
    """check-config asks the binary of every SSH member's node (`[ssh] etcd_binary`, a
    member's own `etcd_binary`) for its version over the daemon's SSH, and refuses a
    change etcd does not support as it does for the local binary (exit 2, the key that
    names the binary); a node that does not answer is a warning, not a config error."""
    if not E34.exists():
        pytest.skip("scripts/fetch-etcd 3.4.23 first")
    c = MultiCluster(lab, tmp_path / "mc", ["h1"], ["h1"], etcd_binary=str(E3516))
    c.start_daemon("h1")
    c.wait_healthy(["h1"])
    pid = c.member_pid("h1")
    h1, h2, h3 = (lab.host(h).address for h in HOSTS)
    lab.link("h3", up=False)

    def check(h2_binary: str) -> tuple[Path, Any]:
        """check-config on h1, on a config of its own (the daemon never reads it): h1
        and h3 on [ssh] etcd_binary = 3.5.30, h2 on its own binary, h3 cut off."""
        text = c.config_text("h1", HOSTS).replace(f'etcd_binary = "{E3516}"',
                                                  f'etcd_binary = "{E35}"')
        if h2_binary:
            at = f'name = "h2"\naddress = "{h2}"\n'
            text = text.replace(at, at + f'etcd_binary = "{h2_binary}"\n')
        path = tmp_path / "check.toml"
        path.write_text(text)
        r = lab.exec("h1", PY, "-m", "ckeetcd.cli.main", "check-config", "--config",
                     str(path), "--log-format", "json", timeout=60)
        assert "Traceback" not in r.stderr, r.stderr
        assert f"etcd binary: {E35} on {h1} (h1)" in r.stdout, r.stdout
        assert "members run: h1 3.5.16" in r.stdout, r.stdout
        assert f"version change: {E35} on {h1} (h1)" in r.stdout, r.stdout
        assert "allowed: 3.5.16 -> 3.5.30: a patch change within 3.5 (up)" in r.stdout
        assert f"warning: {path}: ssh.etcd_binary: {E35} on {h3} (h3): not asked: ssh " \
            f"{h3}: " in r.stderr, r.stderr
        return path, r

    # h2's own binary is 3.4.23: a minor downgrade from what the members run
    path, r = check(str(E34))
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"etcd binary: {E34} on {h2} (h2): etcd 3.4.23" in r.stdout, r.stdout
    assert f"error: {path}: members[1].etcd_binary: {E34} on {h2} (h2): refused: 3.5.16 -> " \
        "3.4.23 is a minor downgrade" in r.stderr, r.stderr
    assert "ckeetcd restore" in r.stderr
    # h2's own binary is not on its node
    missing = str(E34.parent / "no-such-etcd")
    path, r = check(missing)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"error: {path}: members[1].etcd_binary: {missing} on {h2} (h2): " in r.stderr
    # h2 on [ssh] etcd_binary too: everything it can ask is allowed; h3 waits
    path, r = check("")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"etcd binary: {E35} on {h1} (h1), {h2} (h2): etcd 3.5.30" in r.stdout, r.stdout
    assert "error: " not in r.stderr, r.stderr
    # nothing was touched: the same process, still on 3.5.16
    assert c.member_pid("h1") == pid and settled_on(c, "h1", "3.5.16")


def settled_on(c: MultiCluster, member: str, version: str) -> bool:
    st = c.status()
    return any(m["name"] == member and m["healthy"] and m["version"] == version
               for m in st["members"])

"""`member_service = "systemd"` for real: SSH nodes that run their own systemd.

Four hosts of one namespace lab (tests/netns.py) boot a systemd of their own
(tests/systemdlab.py, with all its care: masked boot targets, a tmpfs on
every writable place, its own /dev), their sshd a unit of it. Each has
systemd/ckeetcd-member@.service installed as its header says; members live
in the default `[ssh] data_root` (/var/lib/ckeetcd-member, the node's own
tmpfs). One daemon, on h1's network but outside its systemd, drives them
over SSH only. A canary in the machine's /tmp survives the module, and no
lab systemd is left after it (nor after its owner is killed: `test_..._killed`).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import netns, systemdlab
from tests.harness import wait_for, wait_ok_ops
from tests.multihost import MultiCluster
from tests.netns import Lab
from tests.test_multihost_rolling import SLOWER, check_one_at_a_time
from tests.test_versions import E3516

REPO = Path(__file__).resolve().parent.parent
WHY = netns.available() or systemdlab.available()
pytestmark = [pytest.mark.skipif(WHY is not None, reason=WHY or ""),
              pytest.mark.usefixtures("real_etcd")]
CANARY = Path(f"/tmp/ckeetcd-memberunit-canary-{os.getpid()}")
NODES = ("h1", "h2", "h3", "h4")
DATA_ROOT = "/var/lib/ckeetcd-member"


def unit(name: str) -> str:
    return f"ckeetcd-member@{name}.service"


@pytest.fixture(scope="module", autouse=True)
def canary() -> Iterator[None]:
    """A file in the machine's /tmp that no lab may touch; and no lab systemd left."""
    text = secrets.token_hex(16)
    CANARY.write_text(text)
    yield
    try:
        assert CANARY.read_text() == text, "the machine's /tmp canary changed"
        mine = [p for p, tag in systemdlab.lab_pids().items()
                if tag.split("-", 1)[0] == str(os.getpid())]
        assert not mine, f"lab systemd left running: {mine}"
    finally:
        CANARY.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def lab(module_tmp_path: Path) -> Iterator[Lab]:
    netns.sweep()
    made = Lab(module_tmp_path / "lab", hosts=4, systemd=NODES)
    made.start()
    try:
        text = (REPO / "systemd" / "ckeetcd-member@.service").read_text()
        for h in NODES:
            box = node(made, h)
            box.write("/etc/systemd/system/ckeetcd-member@.service", text)
            box.systemctl("daemon-reload")
        yield made
    finally:
        made.cleanup()


@pytest.fixture(scope="module")
def cluster(lab: Lab, module_tmp_path: Path) -> Iterator[MultiCluster]:
    (module_tmp_path / "mc").mkdir()
    c = MultiCluster(lab, module_tmp_path / "mc", ["h1", "h2", "h3"], ["h1"],
                     ssh_extra='member_service = "systemd"', data_root=DATA_ROOT)
    c.start_daemon("h1")
    try:
        c.wait_healthy(["h1", "h2", "h3"], timeout=120)
        yield c
    finally:
        if c.alive("h1"):
            c.kill_daemon("h1", signal.SIGTERM)


def node(lab: Lab, name: str) -> systemdlab.SystemdLab:
    box = lab.host(name).systemd
    assert box is not None
    return box


def props(box: systemdlab.SystemdLab, name: str) -> dict[str, str]:
    out = box.systemctl("show", "-p", "ActiveState", "-p", "SubState", "-p", "MainPID",
                        "-p", "NRestarts", "-p", "ControlGroup", unit(name)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def env_file(box: systemdlab.SystemdLab, name: str) -> dict[str, str]:
    text = box.run("cat", f"/etc/ckeetcd/member-{name}.env").stdout
    return dict(line.split("=", 1) for line in text.splitlines()
                if line and not line.startswith("#"))


def etcd_pids(box: systemdlab.SystemdLab) -> list[int]:
    return [int(p) for p in box.run("pidof", "etcd", check=False).stdout.split()]


def assert_runs_as_unit(lab: Lab, c: MultiCluster, name: str) -> int:
    """`name`'s etcd is its unit's main process, started by the node's systemd from
    exactly the flags of its environment file; returns that PID (the node's numbering)."""
    box = node(lab, name)
    p = props(box, name)
    assert (p["ActiveState"], p["SubState"]) == ("active", "running"), p
    status = box.systemctl("status", unit(name)).stdout
    assert "Active: active (running)" in status, status
    pid = int(p["MainPID"])
    assert etcd_pids(box) == [pid], "an etcd besides the unit's runs on the node"
    env = env_file(box, name)
    assert set(env) == {"CKEETCD_ETCD_BINARY", "CKEETCD_ETCD_FLAGS"}, env
    argv = box.run("cat", f"/proc/{pid}/cmdline").stdout.split("\0")[:-1]
    assert argv == [env["CKEETCD_ETCD_BINARY"], *env["CKEETCD_ETCD_FLAGS"].split()]
    address = lab.host(name).address
    flags = set(argv[1:])
    assert {f"--name={name}", f"--data-dir={DATA_ROOT}/{name}/data",
            f"--listen-client-urls=https://{address}:2379",
            f"--listen-peer-urls=https://{address}:2380",
            "--client-cert-auth=true", "--peer-client-cert-auth=true"} <= flags, argv
    mode = box.run("stat", "-c", "%a", f"/etc/ckeetcd/member-{name}.env").stdout.strip()
    assert mode == "600"
    # systemd's child, in the unit's cgroup: not a process the SSH session left behind
    stat = box.run("cat", f"/proc/{pid}/stat").stdout
    assert stat[stat.rindex(")") + 2:].split()[1] == "1", "etcd's parent is not systemd"
    cgroup = box.run("cat", f"/proc/{pid}/cgroup").stdout
    assert f"/{unit(name)}" in cgroup and p["ControlGroup"].endswith(unit(name)), cgroup
    # ... and the daemon sees that same process
    row = next(m for m in c.status()["members"] if m["name"] == name)
    assert row["pid"] == pid, json.dumps(row)
    return pid


def stopped_clean(box: systemdlab.SystemdLab, name: str) -> None:
    """No etcd on the node, and the unit inactive, not failed: the daemon's own stop
    is no failure (a failed unit marks the node degraded for its monitoring)."""
    assert etcd_pids(box) == []
    assert box.systemctl("is-active", unit(name), check=False).stdout.strip() == "inactive"
    failed = box.systemctl("list-units", "--failed", "--plain", "--no-legend").stdout
    assert unit(name) not in failed, failed


def cycles(c: MultiCluster, since: int) -> list[dict[str, Any]]:
    return c.events("h1", "cycle", since)


def test_bootstrap_runs_each_member_as_its_unit(lab: Lab, cluster: MultiCluster) -> None:
    for name in ("h1", "h2", "h3"):
        assert_runs_as_unit(lab, cluster, name)
    assert props(node(lab, "h4"), "h4")["ActiveState"] == "inactive"
    wait_for(lambda: "Authentication Status: true"
             in cluster.etcdctl("h4", "auth", "status").stdout, 60, "RBAC on",
             abort=cluster.died)


def test_kill_9_is_restarted_through_the_unit(lab: Lab, cluster: MultiCluster) -> None:
    box = node(lab, "h2")
    old = assert_runs_as_unit(lab, cluster, "h2")
    mark = cluster.mark("h1")
    box.run("kill", "-9", str(old))
    wait_for(lambda: props(box, "h2")["ActiveState"] == "active"
             and int(props(box, "h2")["MainPID"]) not in (0, old), 60,
             "h2's unit running a new etcd", abort=cluster.died)
    cluster.wait_healthy(["h1", "h2", "h3"], timeout=120)
    new = assert_runs_as_unit(lab, cluster, "h2")
    assert new != old
    exited = cluster.events("h1", "member_exited", mark)
    assert [(e["member"], e["signal"]) for e in exited] == [("h2", 9)], exited
    assert any('"msg"' in line for line in exited[0]["log_tail"]), exited  # from the journal
    starts = [e for e in cluster.events("h1", "op", mark) if e["op"] == "restart-member"]
    assert [(e["targets"], e["outcome"]) for e in starts][-1:] == [("h2", "ok")], starts


SLOW_KEYS = "#!/bin/sh\nsleep 1.5\ncat /run/lab-share/authorized_keys\n"
SLOW_LOGIN = ("AuthorizedKeysFile none\nAuthorizedKeysCommand /run/lab-slow-keys\n"
              "AuthorizedKeysCommandUser root\n")  # sshd keeps a keyword's first value


def test_status_waits_for_a_slow_login_instead_of_calling_the_member_stopped(
        lab: Lab, cluster: MultiCluster) -> None:
    """A node whose SSH login takes longer than the probe deadline (1.5 s here, 0.6 s
    there): `ckeetcd status` still shows its member running, with the unit's PID."""
    box = node(lab, "h2")
    pid = int(props(box, "h2")["MainPID"])
    config = lab.host_dir("h2") / "sshd_config"
    fast = config.read_text()
    box.write("/run/lab-slow-keys", SLOW_KEYS, mode="0755")
    hup = ("systemctl", "kill", "--kill-whom=main", "-s", "HUP", "lab-sshd.service")
    # the listener re-reads its config on SIGHUP; open sessions (the daemon's) stay
    mark = len(lab.sshd_log("h2"))
    config.write_text(SLOW_LOGIN + fast)
    try:
        box.systemctl(*hup[1:])
        wait_for(lambda: "Server listening" in lab.sshd_log("h2")[mark:], 30, "sshd reloaded")
        quick = cluster.dir("h1") / "quick-probes.toml"
        quick.write_text(cluster.config_path("h1").read_text()
                         .replace("rpc_timeout = 1.0", "rpc_timeout = 0.3")
                         .replace("connect_timeout = 2.0", "connect_timeout = 10.0"))
        r = lab.exec("h1", sys.executable, "-m", "ckeetcd.cli.main", "status", "--output",
                     "json", "--config", str(quick), "--log-format", "json")
        assert r.returncode == 0, r.stderr[-2000:]
        row = next(m for m in json.loads(r.stdout)["members"] if m["name"] == "h2")
        assert (row["running"], row["pid"], row["error"]) == (True, pid, ""), row
    finally:
        mark = len(lab.sshd_log("h2"))
        config.write_text(fast)
        box.systemctl(*hup[1:])
        wait_for(lambda: "Server listening" in lab.sshd_log("h2")[mark:], 30, "sshd back")


def test_a_rolling_change_restarts_each_unit_once_on_the_new_binary_and_flags(
        lab: Lab, cluster: MultiCluster) -> None:
    """[ssh] etcd_binary (3.5.30 -> 3.5.16, a patch step) and heartbeat/election edited
    at once: each unit is restarted once from a rewritten environment file, the leader
    last; what the member runs is read back from that file (the unit's record)."""
    if not (E3516.exists() and Path(cluster.etcd_binary) != E3516):
        pytest.skip("scripts/fetch-etcd 3.5.16 first, and members on another binary")
    names = ["h1", "h2", "h3"]
    marks = cluster.marks()
    leader = next(m["name"] for m in cluster.status()["members"] if m["leader"])
    cluster.etcd_binary, cluster.extra = str(E3516), SLOWER
    cluster.write_config(names)

    def done() -> bool:
        rows = [m for m in cluster.status()["members"] if m["in_cluster"]]
        return sorted(m["name"] for m in rows) == names and all(
            m["healthy"] and m["version"] == "3.5.16" and m["restart_for"] is None
            for m in rows)

    wait_for(done, 240, "every unit on 3.5.16 with the new flags", abort=cluster.died)
    check_one_at_a_time(cluster, marks, leader)
    for name in names:
        env = env_file(node(lab, name), name)
        assert env["CKEETCD_ETCD_BINARY"] == str(E3516)
        assert "--heartbeat-interval=150" in env["CKEETCD_ETCD_FLAGS"].split()
        assert_runs_as_unit(lab, cluster, name)


def test_swap_away_stops_the_unit_for_good(lab: Lab, cluster: MultiCluster) -> None:
    # h3 must not lead: a leaving leader is stopped gracefully, the others by SIGKILL
    # (the path that once left the unit "failed")
    def leader() -> dict[str, Any] | None:
        return next((m for m in cluster.status()["members"] if m["leader"]), None)
    first = wait_for(leader, 30, "an etcd leader")
    if first["name"] == "h3":
        h1 = next(m for m in cluster.status()["members"] if m["name"] == "h1")
        r = cluster.etcdctl("h1", "move-leader", h1["id"], endpoints=["h3"])
        assert r.returncode == 0, r.stderr
        wait_for(lambda: (leader() or {}).get("name") not in (None, "h3"), 30,
                 "leadership off h3")
    mark = cluster.mark("h1")
    cluster.write_config(["h1", "h2", "h4"])  # h3 -> the spare node h4
    cluster.wait_healthy(["h1", "h2", "h4"], timeout=180)
    wait_ok_ops(lambda: cluster.events("h1", "op", mark), through="promote-member")
    assert_runs_as_unit(lab, cluster, "h4")
    stops = [e for e in cluster.events("h1", "op_step", mark)
             if e["op"] == "stop-member" and e["step"] == "stop-process"]
    assert [e["graceful"] for e in stops if e["outcome"] == "ok"] == [False], stops
    box = node(lab, "h3")
    stopped_clean(box, "h3")
    # ... and it stays stopped: several more cycles of the daemon go by
    after = cluster.mark("h1")
    wait_for(lambda: len(cycles(cluster, after)) >= 5, 60, "five more cycles",
             abort=cluster.died)
    stopped_clean(box, "h3")
    data = box.run("ls", f"{DATA_ROOT}/h3").stdout.split()
    assert "data" not in data and [d for d in data if d.startswith("data.removed-")], data


CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.netns import Lab
from tests.test_multihost_rolling import SLOWER, check_one_at_a_time
from tests.test_versions import E3516
lab = Lab(Path({root!r}), hosts=1, systemd=("h1",)).start()
print(lab.hosts["h1"].systemd.pid, flush=True)
time.sleep(600)
"""


def test_a_lab_systemd_dies_with_its_killed_owner(tmp_path: Path) -> None:
    """kill -9 of the process that booted a node's systemd: that systemd goes too,
    without waiting for a later run's sweep."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(repo=str(REPO), root=str(tmp_path / "lab"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip().isdigit(), child.stderr.read() if child.stderr else ""
        pid = int(line)
        assert pid in systemdlab.lab_pids()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(20)
    wait_for(lambda: pid not in systemdlab.lab_pids(), 20, "the killed owner's systemd gone")
    netns.sweep()  # the namespaces themselves (a dead owner's), as the next run would
    assert not [ns for ns in json.loads(subprocess.run(
        ["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout or "[]")
        if ns["name"].startswith(f"{netns.PREFIX}{child.pid}-")]

"""ckeetcd under a real systemd (tests/systemdlab.py), installed as docs/operator-guide.md says.

Every test here checks that the machine's /tmp canary survived it. The lab
boots a private target with the machine's boot units masked, so the only
units that ever run are the ones a test starts (checked).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import systemdlab
from tests.harness import next_block, wait_for

REPO = Path(__file__).resolve().parent.parent
WHY = systemdlab.available()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")
CANARY = Path(f"/tmp/ckeetcd-systemdlab-canary-{os.getpid()}")
# Units that run in a booted lab before any test starts one.
BASE_UNITS = {"init.scope"}


@pytest.fixture(scope="module", autouse=True)
def canary() -> Iterator[str]:
    """A file in the machine's /tmp that every lab must leave alone."""
    text = secrets.token_hex(16)
    CANARY.write_text(text)
    yield text
    try:
        assert CANARY.read_text() == text, "the machine's /tmp canary changed"
    finally:
        CANARY.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def canary_after_each(canary: str, tmp_path: Path) -> Iterator[None]:
    yield
    assert CANARY.exists() and CANARY.read_text() == canary, \
        "a lab test removed or changed the machine's /tmp canary"
    assert tmp_path.exists(), "a lab test removed pytest's own folder in /tmp"


@pytest.fixture
def lab(tmp_path: Path, real_tools: None) -> Iterator[systemdlab.SystemdLab]:
    """A booted private systemd (seconds): its tests are in the `tools` tier."""
    box = systemdlab.SystemdLab(tmp_path)
    try:
        box.start()
        yield box
    finally:
        box.close()


def test_dry_run_mounts_private_tmpfs_everywhere_and_masks_boot_targets(tmp_path: Path) -> None:
    out = systemdlab.dry_run(tmp_path)
    mounts: dict[str, tuple[str, str]] = {}
    section = ""
    masks: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("== "):
            section = line[3:]
        elif section == "findmnt":
            target, fstype, propagation = line.split()
            mounts[target] = (fstype, propagation)  # the last mount on a target is in force
        elif section == "masks":
            name, _, to = line.partition(" -> ")
            masks[name] = to
    assert {p for _, p in mounts.values()} == {"private"}, mounts
    for place in ("/run", "/etc", "/etc/systemd/system", "/dev", *systemdlab.WRITABLE):
        if Path(place).is_dir():
            assert mounts.get(place, ("",))[0] == "tmpfs", (place, mounts.get(place))
    assert mounts[systemdlab.SHARE][0] != "tmpfs"  # the test's folder, bound read-only
    assert masks == {t: "/dev/null" for t in systemdlab.MASKED}
    assert "DefaultDependencies=no" in out.split("== dropins", 1)[1]
    assert not [t for t in systemdlab.lab_pids().values() if t == "dry"], "systemd started"


def test_lab_runs_no_unit_but_its_own(lab: systemdlab.SystemdLab) -> None:
    assert lab.systemctl("is-system-running", check=False).stdout.strip() == "running"
    running = {u for u in lab.units() if not u.endswith((".mount", ".device"))}
    assert running == BASE_UNITS, running
    targets = lab.systemctl("list-units", "--type=target", "--state=active", "--plain",
                            "--no-legend").stdout.split()
    assert [t for t in targets if t.endswith(".target")] == ["lab.target"]


def test_sweep_kills_the_labs_of_dead_runs_only(tmp_path: Path,
                                               lab: systemdlab.SystemdLab) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "stale").mkdir()
    stale = systemdlab.SystemdLab(tmp_path / "stale")
    stale.tag = f"{gone.pid}-0"  # as left by a test run that was killed
    try:
        stale.start()
        assert systemdlab.sweep() == [stale.pid]
        wait_for(lambda: stale.pid not in systemdlab.lab_pids(), 10, "the stale lab gone")
        assert lab.pid in systemdlab.lab_pids()  # a live run's lab is left alone
        assert lab.systemctl("is-system-running", check=False).stdout.strip() == "running"
    finally:
        stale.close()


# ---- a node installed as the operator guide says ---------------------------------


def build_wheels(share: Path) -> Path:
    """ckeetcd's wheel and its dependencies', for an install without an index in the lab."""
    wheels = share / "wheels"
    subprocess.run([str(REPO / ".venv" / "bin" / "pip"), "wheel", "--quiet", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True, timeout=600)
    return wheels


def etcd_binary() -> Path:
    etcd = Path(os.environ.get("CKEETCD_ETCD_BINARY", "")) if \
        os.environ.get("CKEETCD_ETCD_BINARY") else REPO / ".etcd" / "3.5.30" / "etcd"
    if not etcd.exists():
        pytest.skip("no etcd binary (scripts/fetch-etcd 3.5.30 or CKEETCD_ETCD_BINARY)")
    return etcd


def node_config(block: str) -> str:
    lines = ['[cluster]', 'name = "lab"', 'state_dir = "/var/lib/ckeetcd"', "",
             "[daemon]", "probe_interval = 0.5", "",
             "[etcd]", 'binary = "/usr/local/bin/etcd"', ""]
    for i in (1, 2, 3):
        lines += ["[[members]]", f'name = "n{i}"', f'address = "{block}.{i}"', ""]
    return "\n".join(lines)


APISERVER_CHECK = """#!/bin/sh
# What a kube-apiserver ordered After=ckeetcd.service needs: etcd serving, RBAC on.
set -eu
cd /run/lab-apiserver
eps={endpoints}
ctl() {{ etcdctl --endpoints="$eps" --cacert=etcd-ca.crt --cert=etcd-kube-apiserver.crt \\
        --key=etcd-kube-apiserver.key --dial-timeout=2s --command-timeout=3s "$@"; }}
ctl put /registry/lab-check ok
ctl get /registry/lab-check --print-value-only | grep -qx ok
if ctl put /outside-registry no 2>err; then echo "RBAC off: wrote /outside-registry"; exit 1; fi
grep -q "permission denied" err
echo serving-with-rbac > /run/lab-apiserver/result
"""

APISERVER_UNIT = """[Unit]
Description=stands in for kube-apiserver: needs etcd serving with RBAC on
After=ckeetcd.service
Requires=ckeetcd.service

[Service]
Type=oneshot
RemainAfterExit=yes
Environment=CKEETCD_CONFIG=/etc/ckeetcd/ckeetcd.toml
ExecStart=/usr/local/bin/lab-apiserver-check

[Install]
WantedBy=multi-user.target
"""


def journal_events(lab: systemdlab.SystemdLab, *args: str) -> list[dict[str, Any]]:
    """ckeetcd's JSON events, as journald keeps them."""
    events = []
    for line in lab.journal("-u", "ckeetcd", "-o", "cat", *args).splitlines():
        line = line.strip()
        if line.startswith("<") and ">" in line[:4]:
            line = line.split(">", 1)[1]  # a priority prefix journald did not read
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


class Node:
    """One lab node with ckeetcd installed; `steps` are the install's commands, timed."""

    def __init__(self, lab: systemdlab.SystemdLab, block: str) -> None:
        self.lab = lab
        self.block = block
        self.steps: list[tuple[str, float, subprocess.CompletedProcess[str]]] = []

    def step(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        done = self.lab.sh(script, check=check)
        self.steps.append((script, time.monotonic() - start, done))
        return done

    def endpoints(self) -> str:
        return ",".join(f"https://{self.block}.{i}:2379" for i in (1, 2, 3))


def install(lab: systemdlab.SystemdLab, share: Path) -> Node:
    """The operator guide's install, with the wheels of this checkout instead of an index."""
    node = Node(lab, next_block())
    etcd = etcd_binary()
    lab.sh(f"cp {etcd} {etcd.parent / 'etcdctl'} /usr/local/bin/")  # the distribution's etcd
    lab.run("mkdir", "-p", "/root/ckeetcd/systemd")  # "this repo", as a node gets it
    lab.write("/root/ckeetcd/systemd/ckeetcd.service", (REPO / "systemd/ckeetcd.service")
              .read_text())
    lab.write("/root/ckeetcd/ckeetcd.toml", node_config(node.block))
    wheels = f"{systemdlab.SHARE}/{build_wheels(share).name}"
    node.step("python3 -m venv /opt/ckeetcd && /opt/ckeetcd/bin/pip install --quiet "
              f"--no-index --find-links {wheels} ckeetcd")
    node.step("ln -s /opt/ckeetcd/bin/ckeetcd /opt/ckeetcd/bin/ckecli /usr/local/bin/")
    node.step("install -d -m 0700 /etc/ckeetcd")
    node.step("cp /root/ckeetcd/ckeetcd.toml /etc/ckeetcd/ckeetcd.toml")
    node.step("ckeetcd check-config")
    node.step("cp /root/ckeetcd/systemd/ckeetcd.service /etc/systemd/system/")
    lab.write("/usr/local/bin/lab-apiserver-check",
              APISERVER_CHECK.format(endpoints=node.endpoints()), mode="0755")
    lab.write("/etc/systemd/system/lab-apiserver.service", APISERVER_UNIT)
    return node


@pytest.fixture(scope="module")
def node(module_tmp_path: Path) -> Iterator[Node]:
    share = module_tmp_path
    box = systemdlab.SystemdLab(share)
    try:
        box.start()
        box.journald()
        yield install(box, share)
    finally:
        box.close()


@pytest.mark.usefixtures("real_etcd")
def test_enable_now_returns_once_etcd_serves_with_rbac(node: Node) -> None:
    """`systemctl enable --now` returns on READY=1; a unit ordered after ckeetcd (here a
    stand-in for kube-apiserver, started in the same transaction) finds etcd serving:
    a write under /registry/ passes with the kube-apiserver certificate, one outside
    is refused."""
    # kube-apiserver's certificate, issued before anything starts (`ca export` makes the
    # CA on the first node), so that the stand-in checks etcd the moment it starts
    node.step("ckeetcd ca export --out /root/ca-bundle.pem && mkdir -p /run/lab-apiserver && "
              "cd /run/lab-apiserver && ckecli etcd issue kube-apiserver -output=file")
    node.step("systemctl daemon-reload")
    done = node.step("systemctl enable --now ckeetcd lab-apiserver", check=False)
    status = node.lab.systemctl("status", "ckeetcd", "lab-apiserver", check=False).stdout
    journal = node.lab.run("journalctl", "--no-pager", "-n", "60", "-u", "lab-apiserver",
                           check=False).stdout
    assert done.returncode == 0, f"{done.stderr}\n{status}\n{journal}"
    assert node.lab.run("cat", "/run/lab-apiserver/result").stdout.strip() == "serving-with-rbac"
    show = node.lab.systemctl("show", "ckeetcd", "-p", "ActiveState,SubState,StatusText,"
                              "ExecMainPID").stdout
    assert "ActiveState=active" in show and "SubState=running" in show, show
    assert "StatusText=starting" not in show, show
    # READY=1 (systemd's ActiveEnterTimestamp) came after RBAC was in place, as the
    # daemon's own log says: no race with the stand-in's speed
    shown = node.lab.systemctl("show", "ckeetcd", "-p", "ActiveEnterTimestamp",
                               "--timestamp=us+utc").stdout.strip().split("=", 1)[1]
    ready_at = dt.datetime.strptime(shown, "%a %Y-%m-%d %H:%M:%S.%f UTC").replace(
        tzinfo=dt.UTC).timestamp()
    rbac = [e for e in journal_events(node.lab) if e.get("event") == "op"
            and e.get("op") == "ensure-rbac" and e.get("outcome") == "ok"]
    assert rbac, "no ensure-rbac in the journal"
    assert dt.datetime.fromisoformat(rbac[0]["timestamp"]).timestamp() < ready_at, \
        (rbac[0], ready_at)
    took = next(t for cmd, t, _ in node.steps if cmd.startswith("systemctl enable"))
    print(f"systemctl enable --now ckeetcd lab-apiserver: {took:.2f} s")
    # only ckeetcd, the stand-in and (if any) journald ran: nothing of the machine's
    running = {u for u in node.lab.units() if not u.endswith((".mount", ".device"))}
    assert running - BASE_UNITS <= {"ckeetcd.service", "lab-apiserver.service",
                                    "systemd-journald.service", "systemd-journald.socket",
                                    "systemd-journald-dev-log.socket"}, running


def member_pids(node: Node) -> dict[int, str]:
    """etcd PID (in the lab) -> member name."""
    out = node.lab.sh("for p in $(pidof etcd); do echo $p $(tr '\\0' ' ' < /proc/$p/cmdline); "
                      "done").stdout
    pids = {}
    for line in out.splitlines():
        pid, *argv = line.split()
        name = next(a.split("=", 1)[1] for a in argv if a.startswith("--name="))
        pids[int(pid)] = name
    return pids


def main_pid(node: Node) -> int:
    return int(node.lab.systemctl("show", "ckeetcd", "-p", "MainPID", "--value").stdout)


def started(node: Node) -> Node:
    """The node with ckeetcd running (the first test started it; alone, start it here)."""
    if node.lab.systemctl("is-active", "ckeetcd", check=False).stdout.strip() != "active":
        node.step("systemctl daemon-reload && systemctl enable --now ckeetcd")
    wait_for(lambda: len(member_pids(node)) == 3, 60, "three members")
    return node


@pytest.mark.usefixtures("real_etcd")
def test_members_run_under_the_units_sandbox(node: Node) -> None:
    started(node)
    for pid in member_pids(node):
        status = dict(line.split(":\t", 1) for line in node.lab.run(
            "cat", f"/proc/{pid}/status").stdout.splitlines() if ":\t" in line)
        assert status["NoNewPrivs"].strip() == "1", status
        assert status["Seccomp"].strip() == "2", status  # SystemCallFilter in force
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0, status
        cgroup = node.lab.run("cat", f"/proc/{pid}/cgroup").stdout
        assert "/system.slice/ckeetcd.service" in cgroup, cgroup


@pytest.mark.usefixtures("real_etcd")
def test_status_shows_the_phase_and_reload_waits_for_ready(node: Node) -> None:
    started(node)
    wait_for(lambda: 'Status: "steady"' in node.lab.systemctl("status", "ckeetcd",
                                                             check=False).stdout,
             60, "systemctl status showing the steady phase")
    before = len(journal_events(node.lab))
    node.lab.systemctl("reload", "ckeetcd")
    # the reload job ended on READY=1, sent once the loop read the config again
    events = [e["event"] for e in journal_events(node.lab)[before:]]
    assert "config_reloaded" in events, events
    assert node.lab.systemctl("is-active", "ckeetcd", check=False).stdout.strip() == "active"
    lines = node.lab.journal("-u", "ckeetcd", "-o", "cat", "--grep", "^Reload")
    assert "Reloading" in lines and "Reloaded" in lines, lines


@pytest.mark.usefixtures("real_etcd")
def test_stop_leaves_members_running_and_start_adopts_them(node: Node) -> None:
    started(node)
    members = member_pids(node)
    before = len(journal_events(node.lab))
    node.lab.systemctl("stop", "ckeetcd")
    assert node.lab.systemctl("is-active", "ckeetcd", check=False).stdout.strip() == "inactive"
    assert member_pids(node) == members
    node.lab.systemctl("start", "ckeetcd")
    assert member_pids(node) == members
    adopted = journal_events(node.lab)[before:]
    assert "daemon_started" in [e["event"] for e in adopted]
    assert not [e for e in adopted if e.get("event") == "op"
                and e.get("op") in ("start-member", "restart-member")], "a member restarted"


@pytest.mark.usefixtures("real_etcd")
def test_watchdog_kills_a_hung_loop_and_the_new_daemon_adopts_the_members(node: Node) -> None:
    started(node)
    members = member_pids(node)
    node.lab.write("/etc/systemd/system/ckeetcd.service.d/lab-watchdog.conf",
                   "[Service]\nWatchdogSec=3s\n"
                   "Environment=CKEETCD_FAILPOINT=loop-hang:/run/lab-hang\n")
    node.lab.systemctl("daemon-reload")
    node.lab.systemctl("restart", "ckeetcd")
    hung = main_pid(node)
    restarts = int(node.lab.systemctl("show", "ckeetcd", "-p", "NRestarts", "--value").stdout)
    try:
        node.lab.run("touch", "/run/lab-hang")
        wait_for(lambda: main_pid(node) != hung, 30, "the watchdog to kill the hung daemon",
                 interval=0.05)
    finally:
        node.lab.run("rm", "-f", "/run/lab-hang")  # before RestartSec=2s ends
        node.lab.run("rm", "-f", "/etc/systemd/system/ckeetcd.service.d/lab-watchdog.conf")
        node.lab.systemctl("daemon-reload")
    journal = node.lab.journal("-u", "ckeetcd", "-o", "cat", "-n", "200")
    assert "Watchdog timeout" in journal, journal
    wait_for(lambda: node.lab.systemctl("is-active", "ckeetcd", check=False).stdout.strip()
             == "active", 60, "the restarted daemon READY")
    assert int(node.lab.systemctl("show", "ckeetcd", "-p", "NRestarts",
                                  "--value").stdout) == restarts + 1
    assert member_pids(node) == members  # adopted, not restarted


@pytest.mark.usefixtures("real_etcd")
def test_journalctl_priority_shows_exactly_the_warnings_and_errors(node: Node) -> None:
    started(node)
    good = node.lab.run("cat", "/etc/ckeetcd/ckeetcd.toml").stdout
    node.lab.write("/etc/ckeetcd/ckeetcd.toml", good + "\n[daemon]\nbogus = 1\n", mode="0600")
    try:
        node.lab.systemctl("reload", "ckeetcd")
        wait_for(lambda: [e for e in journal_events(node.lab) if e["event"] ==
                          "config_rejected"], 30, "config_rejected in the journal")
    finally:
        node.lab.write("/etc/ckeetcd/ckeetcd.toml", good, mode="0600")
        node.lab.systemctl("reload", "ckeetcd")
    everything = journal_events(node.lab)
    assert not [e for e in everything if "level" not in e]
    loud = [e for e in everything if e["level"] in ("warning", "error", "critical")]
    shown = journal_events(node.lab, "-p", "warning")
    assert shown == loud and any(e["event"] == "config_rejected" for e in shown), shown
    # journald stripped the prefix: the daemon's entries are the JSON lines of the log
    # contract (the others are systemd's own about the unit, e.g. "Found left-over
    # process" for the members KillMode=process keeps)
    entries = [json.loads(line) for line in node.lab.journal(
        "-u", "ckeetcd", "-o", "json", "-p", "warning").splitlines() if line.strip()]
    daemon = [e for e in entries if e.get("_PID") != "1"]
    assert daemon and all(e["MESSAGE"].startswith("{") for e in daemon), daemon
    assert {e["PRIORITY"] for e in daemon} <= {"2", "3", "4"}, daemon
    assert "config_rejected" in node.lab.journal("-u", "ckeetcd", "-p", "err", "-o", "cat")


# The operator guide's line for every step of one operation (here: n2's start at bootstrap)
# (-R with fromjson?: systemd's own lines in the unit's journal are not JSON)
ONE_OP = ("journalctl -u ckeetcd -o cat | jq -cR 'fromjson? | select(.op == \"start-member\" "
          "and .targets == \"n2\") | {event, step, outcome}'")


@pytest.mark.usefixtures("real_etcd")
def test_one_journalctl_line_finds_every_step_of_an_operation(node: Node) -> None:
    started(node)
    lines = [json.loads(line) for line in node.lab.sh(ONE_OP).stdout.splitlines()]
    steps = [e for e in lines if e["event"] == "op_step"]
    assert steps and all(e["outcome"] == "ok" for e in steps), lines
    assert lines[-1] == {"event": "op", "step": None, "outcome": "ok"}, lines
    history = node.lab.run("ckeetcd", "history", "--output", "json").stdout
    recorded = [json.loads(line) for line in history.splitlines() if line.startswith("{")]
    want = [r["step"] for r in recorded if r.get("event") == "step-end"
            and r.get("op") == "start-member" and r.get("targets") == "n2"]
    assert [e["step"] for e in steps] == want


@pytest.mark.usefixtures("real_etcd")
def test_member_unit_runs_etcd_from_its_environment_file(lab: systemdlab.SystemdLab) -> None:
    """systemd/ckeetcd-member@.service as the daemon uses it over SSH: an environment file
    with the binary and the flags, `systemctl start`, `systemctl stop`. (The daemon
    driving it over SSH: tests/test_memberunit.py.)"""
    etcd = etcd_binary()
    block = next_block()
    lab.sh(f"cp {etcd} {etcd.parent / 'etcdctl'} /usr/local/bin/")
    lab.write("/etc/systemd/system/ckeetcd-member@.service",
              (REPO / "systemd" / "ckeetcd-member@.service").read_text())
    url, peer = f"http://{block}.1:2379", f"http://{block}.1:2380"
    flags = (f"--name=x1 --data-dir=/var/lib/ckeetcd/x1 --listen-client-urls={url} "
             f"--advertise-client-urls={url} --listen-peer-urls={peer} "
             f"--initial-advertise-peer-urls={peer} --initial-cluster=x1={peer}")
    lab.write("/etc/ckeetcd/member-x1.env", "CKEETCD_ETCD_BINARY=/usr/local/bin/etcd\n"
              f"CKEETCD_ETCD_FLAGS={flags}\n", mode="0600")
    lab.systemctl("daemon-reload")
    lab.systemctl("start", "ckeetcd-member@x1")
    wait_for(lambda: lab.run("etcdctl", f"--endpoints={url}", "endpoint", "health",
                             check=False).returncode == 0, 60, "the member unit's etcd")
    cmdline = lab.sh("tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value "
                     "ckeetcd-member@x1)/cmdline").stdout.split()
    assert cmdline == ["/usr/local/bin/etcd", *flags.split()]  # exec'd: no shell left over
    lab.systemctl("stop", "ckeetcd-member@x1")
    assert lab.systemctl("is-active", "ckeetcd-member@x1", check=False).stdout.strip() \
        == "inactive"
    assert not lab.run("pidof", "etcd", check=False).stdout.strip()

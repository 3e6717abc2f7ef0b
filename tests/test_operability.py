"""The daemon as an operator runs it: systemd notify and watchdog (captured on a test
datagram socket), Prometheus /metrics (parsed with prometheus_client's own parser),
and the pause switch, all on real etcd."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ckeetcd.pki.expiry import not_after_of
from tests.harness import Cluster, wait_for


class NotifyCapture:
    """A NOTIFY_SOCKET: records (time, sender pid, message) of every datagram."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        creds = socket.CMSG_SPACE(struct.calcsize("3i"))
        while not self._stop.is_set():
            try:
                data, ancdata, _, _ = self.sock.recvmsg(4096, creds)
            except TimeoutError:
                continue
            pid = 0
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:12])[0]
            self.messages.append((time.monotonic(), pid, data.decode()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def env(self, watchdog_usec: int) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": str(watchdog_usec)}

    def states(self) -> list[str]:
        """Every message but the watchdog pings and bare STATUS updates, first line only."""
        return [m.split("\n")[0] for _, _, m in list(self.messages)
                if m != "WATCHDOG=1" and not m.startswith("STATUS=")]

    def pings(self, after: float = 0.0) -> list[float]:
        return [t for t, _, m in list(self.messages) if m == "WATCHDOG=1" and t > after]


def test_sd_notify_ready_reload_status_watchdog_stopping(make_cluster, tmp_path: Path  # type: ignore[no-untyped-def]
                                                        ) -> None:
    c = make_cluster()
    notify = NotifyCapture(tmp_path / "notify")
    try:
        daemon = c.start_daemon(env=notify.env(2_000_000))  # pings every second
        wait_for(lambda: "READY=1" in notify.states(), 30, "READY=1", abort=c.daemon_died)
        c.wait_healthy(["m1", "m2", "m3"])
        wait_for(lambda: any(m.startswith("STATUS=steady") or "STATUS=steady" in m
                             for _, _, m in notify.messages), 30, "STATUS=steady")
        # the watchdog is pinged from the loop, again and again (how regularly:
        # bench/watchdog.py)
        start = time.monotonic()
        wait_for(lambda: len(notify.pings(after=start)) >= 4, 15, "four pings")
        # a reload: RELOADING=1, then READY=1 once a cycle ran on the new config
        mark = c.mark()
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: notify.states()[-2:] == ["RELOADING=1", "READY=1"], 20,
                 "RELOADING=1 then READY=1", abort=c.daemon_died)
        assert c.events("config_reloaded", since=mark)
        # an edited config file reloads the same way
        c.write_config(["m1", "m2", "m3"], extra="[rbac]\nprune_users = false\n")
        wait_for(lambda: notify.states().count("RELOADING=1") == 2
                 and notify.states()[-1] == "READY=1", 20, "a second reload")
        assert c.stop_daemon() == 0
        wait_for(lambda: notify.states()[-1] == "STOPPING=1", 10, "STOPPING=1")
    finally:
        notify.close()
    assert notify.states() == ["READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1",
                               "STOPPING=1"]
    # Only the daemon itself spoke: its etcd members (which would send READY=1 on
    # their own) never saw NOTIFY_SOCKET.
    assert {pid for _, pid, _ in notify.messages} == {daemon.pid}
    # READY=1 waited for the cluster to serve: STATUS said so while starting, and
    # READY's own STATUS is the phase of a serving cluster.
    first = next(i for i, (_, _, m) in enumerate(notify.messages) if m.startswith("READY=1"))
    before = [m for _, _, m in notify.messages[:first] if m.startswith("STATUS=")]
    assert any(m.startswith("STATUS=starting: ") for m in before), before
    ready = notify.messages[first][2]
    assert "STATUS=" in ready and "STATUS=starting" not in ready, ready


def test_watchdog_pings_stop_when_the_loop_hangs(make_cluster, tmp_path: Path  # type: ignore[no-untyped-def]
                                                 ) -> None:
    c = make_cluster(extra='[metrics]\naddress = "127.0.0.1:0"\n')
    notify = NotifyCapture(tmp_path / "notify")
    hang = tmp_path / "hang-now"
    try:
        c.start_daemon(env={**notify.env(1_000_000),
                            "CKEETCD_FAILPOINT": f"loop-hang:{hang}"})
        c.wait_healthy(["m1", "m2", "m3"])
        url = wait_for(lambda: c.events("metrics_listening"), 10, "metrics")[0]["url"]
        start = time.monotonic()
        wait_for(lambda: len(notify.pings(after=start)) >= 3, 10, "pings every 0.5 s")
        mark = c.mark()
        hang.touch()
        wait_for(lambda: c.events("failpoint", since=mark), 10, "the loop to hang")
        stuck = time.monotonic()

        def silent_for_3s() -> bool:
            assert not notify.pings(after=stuck + 0.6), "pinged after the loop hung"
            return time.monotonic() - stuck > 3.0

        wait_for(silent_for_3s, 10, "three seconds without a ping")
        # The process and its event loop are alive (metrics still answer): only the
        # control loop is stuck, which is what systemd's watchdog must catch.
        assert c.daemon is not None and c.daemon.poll() is None
        assert "ckeetcd_has_quorum" in scrape(url)
        assert c.stop_daemon() == 0
        wait_for(lambda: notify.states()[-1:] == ["STOPPING=1"], 10, "STOPPING=1")
    finally:
        notify.close()


# ---- metrics -------------------------------------------------------------------------
def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        return str(r.read().decode())


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels), parsed by the Prometheus text parser."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(scrape(url)):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(url: str, name: str, **labels: str) -> float | None:
    return samples(url).get((name, tuple(sorted(labels.items()))))


def until(url: str, name: str, want: Callable[[float | None], bool], what: str,
          c: Cluster, timeout: float = 30, **labels: str) -> float | None:
    def check() -> bool:
        return want(value(url, name, **labels))

    wait_for(check, timeout, f"{name}{labels} {what}", abort=c.daemon_died)
    return value(url, name, **labels)


def test_metrics_follow_a_hung_member_a_killed_leader_and_ops(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c = make_cluster(extra='[metrics]\naddress = "127.0.0.1:0"\n')
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    listening = wait_for(lambda: c.events("metrics_listening"), 10, "metrics_listening")[0]
    url = listening["url"]
    assert url.startswith("http://127.0.0.1:")
    until(url, "ckeetcd_members", lambda v: v == 3, "= 3", c, state="healthy")
    s = samples(url)
    assert s[("ckeetcd_members", (("state", "unhealthy"),))] == 0
    assert s[("ckeetcd_members", (("state", "learner"),))] == 0
    assert s[("ckeetcd_has_quorum", ())] == 1
    assert s[("ckeetcd_alarms", (("alarm", "NOSPACE"),))] == 0
    assert s[("ckeetcd_alarms", (("alarm", "CORRUPT"),))] == 0
    assert s[("ckeetcd_paused", ())] == 0
    assert s[("ckeetcd_ops_total", (("op", "ensure-rbac"), ("outcome", "ok")))] >= 1
    assert s[("ckeetcd_cycle_duration_seconds_count", ())] >= 1
    for n in ("m1", "m2", "m3"):
        assert s[("ckeetcd_db_size_bytes", (("member", n),))] > 0
        assert s[("ckeetcd_db_size_in_use_bytes", (("member", n),))] > 0
    # member certificates: a year by default
    assert 364 * 86400 < s[("ckeetcd_cert_expiry_seconds", ())] <= 365 * 86400
    assert s[("ckeetcd_last_backup_success_timestamp_seconds", ())] == 0
    # the CAs (client and peer) and the daemon's own certificate, as the files say
    pki = c.state_dir / "pki"
    for role, name in (("client", "ca.crt"), ("peer", "peer-ca.crt")):
        assert s[("ckeetcd_ca_expiry_timestamp_seconds", (("role", role),))] == \
            not_after_of(pki / name).timestamp()  # type: ignore[union-attr]
    # one daemon, no election: it acts alone (ckeetcd_daemon_role feeds CkeetcdNoLeaderDaemon)
    assert s[("ckeetcd_daemon_role", (("role", "single"),))] == 1
    assert s[("ckeetcd_daemon_role", (("role", "follower"),))] == 0
    assert s[("ckeetcd_daemon_cert_expiry_timestamp_seconds", ())] == \
        not_after_of(pki / "daemon-root.crt").timestamp()  # type: ignore[union-attr]
    leader = next(n for n in ("m1", "m2", "m3") if s[("ckeetcd_leader", (("member", n),))])
    follower = next(n for n in ("m1", "m2", "m3") if n != leader)

    # a hung follower: unhealthy (the daemon waits; nothing to restart)
    pid = c.member_pid(follower)
    assert pid
    os.kill(pid, signal.SIGSTOP)
    try:
        until(url, "ckeetcd_members", lambda v: v == 1, "= 1", c, state="unhealthy")
        assert value(url, "ckeetcd_member_healthy", member=follower) == 0
        assert value(url, "ckeetcd_has_quorum") == 1
        assert value(url, "ckeetcd_phase", phase="degraded") == 1
    finally:
        os.kill(pid, signal.SIGCONT)
    until(url, "ckeetcd_members", lambda v: v == 3, "= 3 again", c, state="healthy")

    # the leader killed: a new leader, the member restarted by an op
    before = value(url, "ckeetcd_leader_changes_total") or 0
    pid = c.member_pid(leader)
    assert pid
    os.kill(pid, signal.SIGKILL)
    until(url, "ckeetcd_ops_total", lambda v: (v or 0) >= 1, ">= 1", c,
          op="restart-member", outcome="ok")
    assert (value(url, "ckeetcd_op_duration_seconds_count", op="restart-member") or 0) >= 1
    until(url, "ckeetcd_leader_changes_total", lambda v: (v or 0) > before, "grows", c)
    until(url, "ckeetcd_members", lambda v: v == 3, "= 3 after the restart", c,
          state="healthy")
    until(url, "ckeetcd_phase", lambda v: v == 1, "steady", c, phase="steady")

    # a backup made with the CLI shows up (the gauge reads the backup folder)
    r = c.cli("etcd", "local-backup")
    assert r.returncode == 0, r.stderr
    until(url, "ckeetcd_last_backup_success_timestamp_seconds",
          lambda v: v is not None and abs(v - time.time()) < 120, "now", c)


def test_metrics_off_by_default_and_remote_needs_a_flag(cluster: Cluster) -> None:
    assert cluster.events("metrics_listening") == []
    base = cluster.config_path.read_text()
    cluster.config_path.write_text(base + '[metrics]\naddress = "10.1.2.3:9379"\n')
    r = cluster.cli("check-config")
    assert r.returncode == 2 and "metrics.address" in r.stderr + r.stdout
    assert "allow_remote" in r.stderr + r.stdout
    cluster.config_path.write_text(base + '[metrics]\naddress = "[::1]:9379"\n'
                                   "allow_remote = false\n")
    assert cluster.cli("check-config").returncode == 0


# ---- pause -----------------------------------------------------------------------------
def cycles_since(c: Cluster, mark: int) -> list[dict[str, Any]]:
    return c.events("cycle", since=mark)


def test_pause_command_and_config_key(cluster: Cluster) -> None:
    r = cluster.cli("pause", "--reason", "etcd upgrade")
    assert r.returncode == 0, r.stderr
    paused = wait_for(lambda: cluster.events("paused"), 20, "paused event")
    assert "etcd upgrade" in paused[0]["reason"]
    shown = json.loads(cluster.cli("status", "--output", "json").stdout)
    assert "etcd upgrade" in shown["paused"] and shown["alarms"] == []
    pid = cluster.member_pid("m2")
    assert pid
    mark = cluster.mark()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(cycles_since(cluster, mark)) >= 3, 20, "three cycles",
             abort=cluster.daemon_died)
    assert cluster.member_pid("m2") is None, "restarted while paused"
    assert cluster.events("op", since=mark) == []
    assert {e["phase"] for e in cycles_since(cluster, mark)} == {"paused"}
    # still observing and logging: the daemon saw m2 go down
    assert any(not m["healthy"] for e in cluster.events("health", since=mark)
               for m in e["members"] if m["name"] == "m2")

    # resumed by command, but paused by the config: still nothing
    text = cluster.config_path.read_text()
    cluster.config_path.write_text(text.replace("[daemon]\n", "[daemon]\npaused = true\n", 1))
    wait_for(lambda: cluster.events("config_reloaded", since=mark), 20, "config reloaded")
    r = cluster.cli("resume")
    assert r.returncode == 0 and "still paused by the config" in r.stdout
    mark = cluster.mark()
    wait_for(lambda: len(cycles_since(cluster, mark)) >= 2, 20, "two cycles")
    assert cluster.member_pid("m2") is None
    assert {e["phase"] for e in cycles_since(cluster, mark)} == {"paused"}

    # config key off: repaired
    cluster.config_path.write_text(text)
    wait_for(lambda: cluster.events("resumed", since=mark), 20, "resumed event")
    wait_for(lambda: cluster.member_pid("m2") not in (None, pid), 30, "m2 restarted")
    cluster.wait_healthy(["m1", "m2", "m3"], timeout=30)
    assert cluster.ok_ops(mark, through="restart-member") == ["restart-member"]
    r = cluster.cli("resume")
    assert "not paused" in r.stdout and "still paused" not in r.stdout

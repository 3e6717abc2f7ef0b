"""Members on other hosts over SSH, one daemon per node (network-namespace lab)."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import signal
import stat
from pathlib import Path
from typing import Any

from ckeetcd.core.kinds import MEMBERSHIP_OPS, NODE_LOCAL_OPS
from ckeetcd.pki import not_after
from ckeetcd.tasks.backup import list_backups
from tests.harness import wait_for, wait_ok_ops
from tests.multihost import PY, MultiCluster
from tests.netns import Lab


def test_bootstrap_over_ssh_single_daemon(lab: Lab, tmp_path: Path) -> None:
    c = MultiCluster(lab, tmp_path / "mc", ["h1", "h2", "h3"], ["h1"])
    c.start_daemon("h1")
    c.wait_healthy(["h1", "h2", "h3"])
    for m in ("h1", "h2", "h3"):
        pid = c.member_pid(m)
        assert pid is not None
        assert c.pid_host(pid) == m, f"{m}'s etcd runs outside its host"
        key = c.member_dir(m) / "tls" / "server.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert not (c.member_dir(m) / "tls" / "ca.key").exists()
    # RBAC follows health (the daemon first wins the election it runs for SSH members)
    wait_for(lambda: "Authentication Status: true" in c.etcdctl("h4", "auth", "status").stdout,
             30, "auth enabled", abort=c.died)


def three_daemons(lab: Lab, tmp_path: Path, members: list[str] | None = None,
                  daemon_extra: str = "") -> MultiCluster:
    c = MultiCluster(lab, tmp_path / "mc", members or ["h1", "h2", "h3"], ["h1", "h2", "h3"],
                     daemon_extra=daemon_extra)
    c.share_ca()
    c.start_daemons()
    c.wait_healthy(c.members)
    wait_for(c.leader, 30, "a leader daemon", abort=c.died)
    return c


def test_three_daemons_elect_one_leader_and_hand_over_on_kill(lab: Lab, tmp_path: Path) -> None:
    c = three_daemons(lab, tmp_path)
    first = c.leader()
    assert first is not None
    follower = next(d for d in c.daemon_hosts if d != first)
    assert c.status(follower)["leader_daemon"] == first  # followers serve status
    # Only the bootstrapper (h1, the first member) and daemons that held the leadership
    # changed the cluster (under load a lease can change hands while the cluster
    # forms); the others only kept their own node's etcd servers file.
    changes = [(d, e["op"]) for d, e in c.all_events("op") if e["op"] not in NODE_LOCAL_OPS]
    leaders = {d for d, _ in c.all_events("leadership_acquired")}
    assert first in leaders
    assert {d for d, _ in changes} <= {"h1"} | leaders, (changes, leaders)
    want = [c.url(m) for m in ("h1", "h2", "h3")]
    wait_for(lambda: all(c.servers(d) == want for d in c.daemon_hosts), 20,
             "every daemon's etcd servers file lists the three members")
    marks = c.marks()
    c.kill_daemon(first)
    # how soon (against the lease TTL) is bench/failover.py's figure, not a limit here
    new = wait_for(lambda: c.leader() if c.leader() != first else None, 30,
                   "a new leader", abort=c.died)
    assert new != first
    c.wait_healthy(["h1", "h2", "h3"], host=new)
    assert [e for e in c.events(new, "leadership_acquired", marks[new])]


def mutating_steps(c: MultiCluster, daemon: str) -> list[tuple[float, float, str]]:
    """(begin, end, op:step) of every step that changed the cluster, from the history."""
    begins: dict[tuple[object, ...], float] = {}
    out = []
    for r in c.history(daemon):
        if r.get("op") in NODE_LOCAL_OPS or r["event"] not in ("step-begin", "step-end"):
            continue
        key = (r["pid"], r["cycle"], r["op"], r["step"], r["targets"])
        if r["event"] == "step-begin":
            begins[key] = r["ts"]
        elif r["outcome"] == "ok" and key in begins:
            out.append((begins.pop(key), r["ts"], f"{r['op']}:{r['step']}"))
    return out


def test_swap_to_spare_host_survives_leader_kill_mid_replacement(lab: Lab, tmp_path: Path,
                                                                 ) -> None:
    c = MultiCluster(lab, tmp_path / "mc", ["h1", "h2", "h3"], ["h1", "h2", "h3"])
    c.share_ca()
    # h1 bootstraps and leads first; it kills itself (kill -9) right after
    # the replacement's add-member step: the op is in flight.
    c.start_daemon("h1", env={"CKEETCD_FAILPOINT": "add-member:member-add"})
    wait_for(lambda: c.leader() == "h1", 60, "h1 leading", abort=c.died)
    c.start_daemon("h2")
    c.start_daemon("h3")
    c.wait_healthy(["h1", "h2", "h3"])
    marks = c.marks()
    c.write_config(["h1", "h2", "h4"])  # h3 -> the spare host h4
    wait_for(lambda: not c.alive("h1"), 60, "h1 killed by its failpoint")
    c.wait_healthy(["h1", "h2", "h4"], host="h2", timeout=120)
    new = c.leader()
    assert new in ("h2", "h3")
    wait_ok_ops(lambda: c.events(new, "op", marks[new]), through="promote-member")
    old_ops = [e["op"] for e in c.events("h1", "op", marks["h1"]) if e["outcome"] == "ok"
               and e["op"] not in NODE_LOCAL_OPS]
    new_ops = [e["op"] for e in c.events(new, "op", marks[new]) if e["outcome"] == "ok"
               and e["op"] not in NODE_LOCAL_OPS]
    # The seed's order, split across the two leaders at the kill.
    assert old_ops == ["stop-member", "remove-member"], old_ops
    assert new_ops[-2:] == ["start-member", "promote-member"], new_ops
    assert "add-member" not in new_ops  # it had happened: the new leader finishes the op
    assert c.member_pid("h3") is None
    assert list(c.member_dir("h3").glob("data.removed-*")), "h3's data was not moved aside"
    pid = c.member_pid("h4")
    assert pid is not None and c.pid_host(pid) == "h4"
    # h3's apiserver traffic was cut before it was removed (on the old leader's node).
    cut = [e for e in c.events("h1", "op", marks["h1"]) if e["op"] == "stop-apiserver-traffic"]
    assert cut, "no stop-apiserver-traffic before the removal"
    # Two daemons never acted at once: the mutating steps of all daemons are disjoint.
    steps = sorted((b, e, d, s) for d in c.daemon_hosts for b, e, s in mutating_steps(c, d))
    for (_b1, e1, d1, s1), (b2, _e2, d2, s2) in itertools.pairwise(steps):
        assert d1 == d2 or e1 <= b2, f"{d1} {s1} overlaps {d2} {s2}"
    assert {d for _, _, d, _ in steps} >= {"h1", new}


def test_host_cut_off_is_reported_and_its_traffic_stopped(lab: Lab, tmp_path: Path) -> None:
    c = three_daemons(lab, tmp_path)
    leader = c.leader()
    victim = next(h for h in ("h3", "h2", "h1") if h != leader)
    others = [h for h in c.daemon_hosts if h != victim]
    marks = c.marks()
    lab.link(victim, up=False)
    want = [c.url(m) for m in ("h1", "h2", "h3") if m != victim]
    wait_for(lambda: all(c.servers(d) == want for d in others), 30,
             f"{victim} cut from the etcd servers files of {others}", abort=c.died)
    reported = [e for e in c.events(leader, "health", marks[leader])
                if any(m["name"] == victim and not m["healthy"] for m in e["members"])]
    assert reported, "the leader did not report the cut-off member unhealthy"
    ssh = wait_for(lambda: [e for e in c.events(leader, "ssh_error", marks[leader])
                            if e["host"] == lab.host(victim).address], 30,
                   f"an ssh_error for {victim}'s node")
    assert ssh[0]["kind"] in ("unreachable", "timeout"), ssh
    row = next(m for m in c.status(leader)["members"] if m["name"] == victim)
    assert (row["node_reachable"], row["running"], row["pid"]) == (False, None, None), row
    assert row["error"], row
    removed = [e for d in others for e in c.events(d, "op", marks[d])
               if e["op"] in ("remove-member", "add-member")]
    assert not removed, "a desired member that is only unreachable must not be replaced"
    lab.link(victim, up=True)
    c.wait_healthy(["h1", "h2", "h3"], host=leader)


def test_ssh_failures_are_logged_clearly_and_change_nothing(lab: Lab, tmp_path: Path) -> None:
    c = MultiCluster(lab, tmp_path / "mc", ["h1", "h2", "h3"], ["h1"])
    h3 = lab.host("h3")
    good_known = lab.known_hosts.read_text()
    h4_key = next(line.split(" ", 1)[1] for line in good_known.splitlines()
                  if line.startswith(lab.host("h4").address + " "))
    lab.known_hosts.write_text("".join(
        f"{h3.address} {h4_key}\n" if line.startswith(h3.address + " ") else line + "\n"
        for line in good_known.splitlines()))
    c.start_daemon("h1")

    def error_for(kind: str) -> dict[str, object]:
        found: dict[str, object] = wait_for(
            lambda: next((e for e in c.events("h1", "ssh_error")
                          if e["host"] == h3.address and e["kind"] == kind), None),
            30, f"ssh_error kind={kind} for h3", abort=c.died)
        return found

    def nothing_changed() -> None:
        wait_for(lambda: [e for e in c.events("h1", "cycle")[-1:]
                          if "waiting for every node" in e["reason"]], 30,
                 "a cycle that waits for every node")
        assert not c.events("h1", "op"), "ops ran although a node is not reachable"
        assert all(c.member_pid(m) is None for m in ("h1", "h2", "h3"))

    e = error_for("host-key")
    assert "host key" in str(e["error"])
    nothing_changed()
    # the right host key, but h3 no longer accepts the daemon's key
    authorized = lab.host_dir("h3") / "authorized_keys"
    allowed = authorized.read_text()
    authorized.write_text("")
    lab.known_hosts.write_text(good_known)
    e = error_for("auth")
    assert "refused" in str(e["error"])
    nothing_changed()
    # the key is accepted again, but h3 is off the network
    lab.link("h3", up=False)
    authorized.write_text(allowed)
    error_for("unreachable")
    nothing_changed()
    lab.link("h3", up=True)
    c.wait_healthy(["h1", "h2", "h3"])
    assert [e for e in c.events("h1", "ssh_connected") if e["host"] == h3.address]


def led_when(c: MultiCluster, daemon: str, event: dict[str, Any]) -> bool:
    """Whether `daemon`'s last role before `event` (from its own log) was leader."""
    roles = [e["role"] for e in c.events(daemon, "role_changed")
             if e["timestamp"] <= event["timestamp"]]
    return roles[-1:] == ["leader"]


def test_only_the_leader_takes_scheduled_backups(lab: Lab, tmp_path: Path) -> None:
    c = MultiCluster(lab, tmp_path / "mc", ["h1", "h2", "h3"], ["h1", "h2", "h3"],
                     extra="[backup]\ninterval = 1\n")
    c.share_ca()
    c.start_daemons()
    c.wait_healthy(c.members)
    first = wait_for(c.leader, 30, "a leader daemon", abort=c.died)
    wait_for(lambda: len(c.events(first, "backup_created")) >= 2, 30,
             f"two scheduled backups on the leader {first}", abort=c.died)
    marks = c.marks()
    c.kill_daemon(first)
    new = wait_for(lambda: c.leader() if c.leader() != first else None, 30,
                   "a new leader", abort=c.died)
    wait_for(lambda: c.events(new, "backup_created", marks[new]), 30,
             f"a scheduled backup on the new leader {new}", abort=c.died)
    # Every backup of every daemon was taken while that daemon led (a loaded
    # machine may move the lease more often than the test does: that is fine).
    taken = [(d, e) for d in c.daemon_hosts for e in c.events(d, "backup_created")]
    by_follower = [(d, e["timestamp"]) for d, e in taken if not led_when(c, d, e)]
    assert by_follower == [], by_follower
    for d in c.daemon_hosts:
        assert len(list_backups(c.state_dir(d) / "backups")) == \
            len(c.events(d, "backup_created")) - len(c.events(d, "backup_removed")), d


def test_restore_over_ssh_while_other_daemons_run(lab: Lab, tmp_path: Path) -> None:
    """Quorum lost; the operator restores from h2 and forgets the daemons on h1 and h3.

    The restore marks every member dir RESTORING first: the bootstrapper daemon
    on h1 (the one that acts without quorum) must not restart a member the
    restore just stopped; both report phase "restoring" and change nothing.
    """
    c = three_daemons(lab, tmp_path)
    for i in range(20):
        assert c.etcdctl("h2", "put", f"/drill/{i:02d}", f"v{i}").returncode == 0
    snap = tmp_path / "snap.db"
    r = c.etcdctl("h2", "snapshot", "save", str(snap), endpoints=["h1"])
    assert r.returncode == 0, r.stderr
    assert c.etcdctl("h2", "put", "/after/backup", "lost").returncode == 0

    # Disaster: h2 and h3 lose their data and die at the same moment.
    marks = c.marks()
    pids = {m: c.member_pid(m) for m in ("h2", "h3")}
    for m, pid in pids.items():
        assert pid is not None
        shutil.rmtree(c.member_dir(m) / "data")
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(c.member_pid(m) is None for m in pids), 10, "both members gone")
    wait_for(lambda: [e for e in c.events("h1", "cycle", marks["h1"])
                      if e["phase"] == "no-quorum"], 30, "h1 sees no quorum", abort=c.died)

    c.kill_daemon("h2", signal.SIGTERM)  # the restore refuses to run beside its own daemon
    marks = c.marks()
    r = lab.exec("h2", PY, "-m", "ckeetcd.cli.main", "restore", "--from", str(snap), "--yes",
                 "--config", str(c.config_path("h2")), "--log-format", "json", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "restored the snapshot for h1, h2, h3" in r.stdout, r.stdout
    for m in ("h1", "h2", "h3"):
        assert not (c.member_dir(m) / "RESTORING").exists(), f"{m}'s marker left behind"

    # The daemons left running kept their hands off while it ran, and said why.
    records = [e for e in c.history("h2") if e.get("op") == "restore-cluster"]
    assert [e["step"] for e in records if e.get("event") == "step-end"][:2] == \
        ["mark-restoring", "stop-members"]
    began = next(e["ts"] for e in records if e["event"] == "restore-begin")
    ended = next(e["ts"] for e in records if e["event"] == "restore-end")
    for d in ("h1", "h3"):
        assert "restoring" in [e["phase"] for e in c.events(d, "cycle", marks[d])], d
        acted = [e["op"] for e in c.events(d, "op", marks[d])
                 if began <= dt.datetime.fromisoformat(e["timestamp"]).timestamp() <= ended]
        assert acted == [], f"the daemon on {d} acted during the restore: {acted}"

    c.start_daemon("h2")
    c.wait_healthy(["h1", "h2", "h3"], host="h2")
    r = c.etcdctl("h2", "get", "/drill/", "--prefix", "--keys-only")
    assert r.stdout.split() == [f"/drill/{i:02d}" for i in range(20)], r.stdout
    assert c.etcdctl("h2", "get", "/after/backup").stdout == ""


def test_without_quorum_or_bootstrapper_a_node_restarts_its_own_member(
        lab: Lab, tmp_path: Path) -> None:
    """The bootstrapper's host (h1) is cut off and h2's etcd dies: quorum is lost.

    Nobody may lead without quorum and the bootstrapper cannot reach anyone;
    h2's daemon restarts the member of its own node (always safe: same data,
    no membership change), quorum is back, and h3's daemon touched nothing.
    """
    c = three_daemons(lab, tmp_path)
    lab.link("h1", up=False)
    marks = c.marks()
    pid = c.member_pid("h2")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: c.member_pid("h2") not in (None, pid), 30,
             "h2's etcd started again", abort=c.died)
    wait_for(lambda: {"h2", "h3"} <= c.voters("h2"), 30, "h2 and h3 healthy voters",
             abort=c.died)
    assert "restart-member" in wait_ok_ops(lambda: c.events("h2", "op", marks["h2"]),
                                           through="restart-member")
    # h3's daemon (follower without quorum) never started h2's member; once
    # quorum is back it may lead and act as any leader does.
    started = [e for e in c.events("h3", "op", marks["h3"])
               if e["op"] in ("restart-member", "start-member") and e["targets"] == "h2"]
    assert started == [], started
    lab.link("h1", up=True)
    c.wait_healthy(["h1", "h2", "h3"], host="h2")


def test_a_follower_without_the_ca_key_renews_its_certificate_through_the_leader(
        lab: Lab, tmp_path: Path) -> None:
    """h3 imported the CA without its key; its 45 s certificate is renewed by a CSR."""
    c = MultiCluster(lab, tmp_path / "mc", ["h1", "h2", "h3"], ["h1", "h2", "h3"],
                     extra='[tls]\ndaemon_cert_lifetime = "45s"\n')
    c.share_ca(without_key=("h3",))
    pki = c.state_dir("h3") / "pki"
    first = not_after((pki / "daemon-root.crt").read_bytes())
    c.start_daemons()
    c.wait_healthy(c.members)
    renewed = wait_for(lambda: c.events("h3", "daemon_cert_renewed"), 60,
                       "h3's certificate renewed", abort=c.died)
    assert renewed[0]["how"] == "signed by the leader"
    signed = [d for d, e in c.all_events("daemon_cert_signed") if e["daemon"] == "h3"]
    assert signed and set(signed) <= {"h1", "h2"}, signed  # by a daemon with the CA key
    assert not (pki / "ca.key").exists(), "the CA key reached the follower"
    assert not (pki / "daemon-root.key.pending").exists()
    assert stat.S_IMODE((pki / "daemon-root.key").stat().st_mode) == 0o600
    assert not_after((pki / "daemon-root.crt").read_bytes()) > first
    # The requests and answers are gone from etcd once installed.
    r = c.etcdctl("h1", "get", "/ckeetcd/c", "--prefix", "--keys-only")
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout
    # After the first certificate expired, h3 still reaches the cluster with the new one.
    wait_for(lambda: dt.datetime.now(dt.timezone.utc) > first + dt.timedelta(seconds=1), 60,
             "h3's first certificate expired")
    assert {"h1", "h2", "h3"} <= c.voters("h3")


def test_a_stale_config_on_one_node_holds_membership_changes(lab: Lab, tmp_path: Path) -> None:
    """The swap h3 -> h4 reaches two daemons' configs but not a third: the leader waits.

    Were it to act, a later leader on the stale node would swap h4 back for h3.
    """
    c = three_daemons(lab, tmp_path)
    leader = c.leader()
    assert leader is not None
    stale = next(d for d in ("h3", "h2", "h1") if d != leader)
    marks = c.marks()
    c.write_config(["h1", "h2", "h4"], only=[d for d in c.daemon_hosts if d != stale])
    # (The others reload within moments of each other: the drift settles on `stale`.)
    wait_for(lambda: [e for e in c.events(leader, "config_drift", marks[leader])
                      if e["others"] == {stale: ["h1", "h2", "h3"]}], 30,
             f"config_drift on the leader naming {stale}", abort=c.died)
    settle = c.mark(leader)
    wait_for(lambda: len([e for e in c.events(leader, "cycle", settle)
                          if e["phase"] == "config-drift"]) >= 2, 30,
             "two config-drift cycles", abort=c.died)
    changed = [(d, e["op"]) for d, e in c.all_events("op", marks) if e["op"] in MEMBERSHIP_OPS]
    assert changed == [], changed
    assert c.voters(leader) == {"h1", "h2", "h3"}  # h3 reported, though not in its config
    listed = {d["id"]: d["same_members"] for d in c.status(leader)["daemons"]}
    assert listed == {d: d != stale for d in c.daemon_hosts}, listed

    c.write_config(["h1", "h2", "h4"], only=[stale])  # the operator fixes the stale copy
    wait_for(lambda: c.events(leader, "config_agreed", marks[leader]), 30, "config_agreed",
             abort=c.died)
    c.wait_healthy(["h1", "h2", "h4"], host=leader, timeout=120)

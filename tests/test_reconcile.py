"""The reconciler on real etcd: repairs and config-driven membership changes."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
from collections.abc import Callable

from ckeetcd.nodes.local import ETCD_BINARY_ENV
from ckeetcd.ops.context import FAILPOINT_ENV
from tests.harness import Cluster, Writer, wait_for


def test_killed_member_is_restarted_on_its_data(cluster: Cluster) -> None:
    pid = cluster.member_pid("m2")
    assert pid
    mark = cluster.mark()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: cluster.member_pid("m2") not in (None, pid), 30, "m2 restarted")
    cluster.wait_healthy(["m1", "m2", "m3"], timeout=30)
    assert cluster.ok_ops(mark, through="restart-member") == ["restart-member"]
    assert [e["op"] for e in cluster.events("op", since=mark)] == ["restart-member"]


def test_wiped_member_is_removed_and_added_fresh(cluster: Cluster) -> None:
    _, before = cluster.observe()
    old_id = next(m.id for m in before.members or () if m.name == "m3")
    pid = cluster.member_pid("m3")
    assert pid
    mark = cluster.mark()
    os.kill(pid, signal.SIGKILL)
    shutil.rmtree(cluster.data_dir("m3"))

    def rejoined() -> bool:
        _, obs = cluster.observe()
        m3 = next((m for m in obs.members or () if m.name == "m3"), None)
        return bool(m3 and m3.id != old_id and not m3.learner and obs.is_healthy(m3))

    wait_for(rejoined, 60, "m3 re-added with a new ID")
    cluster.wait_healthy(["m1", "m2", "m3"], timeout=30)
    ops = cluster.ok_ops(mark, through="promote-member")
    assert "remove-member" in ops and "add-member" in ops


def test_swap_in_config_replaces_member_in_seed_order(cluster: Cluster) -> None:
    mark = cluster.mark()
    cluster.write_config(["m1", "m2", "m4"])
    cluster.wait_healthy(["m1", "m2", "m4"], timeout=90)
    ops = cluster.ok_ops(mark, through="promote-member")
    assert ops == ["stop-member", "remove-member", "add-member", "start-member",
                   "promote-member"], ops
    r = cluster.etcdctl("member", "list")
    assert "m3" not in r.stdout and "m4" in r.stdout
    assert cluster.member_pid("m3") is None
    archived = list((cluster.state_dir / "members" / "m3").glob("data.removed-*"))
    assert archived, "m3's data was not moved aside"


def test_writes_survive_kill_and_swap(cluster: Cluster) -> None:
    with Writer(cluster, lambda: ["m1", "m2"]) as writer:
        wait_for(lambda: len(writer.acked) > 20, 20, "writer running")
        pid = cluster.member_pid("m2")
        assert pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: cluster.member_pid("m2") not in (None, pid), 30, "m2 restarted")
        cluster.wait_healthy(["m1", "m2", "m3"], timeout=30)
        cluster.write_config(["m1", "m2", "m4"])
        cluster.wait_healthy(["m1", "m2", "m4"], timeout=90)
        count = len(writer.acked)
        wait_for(lambda: len(writer.acked) > count + 20, 20, "writer still writing")
    assert len(writer.acked) > 100
    assert writer.lost("m4") == []


def test_second_daemon_on_same_state_dir_refuses(cluster: Cluster) -> None:
    r = cluster.cli("run", "--log-format", "json")
    assert r.returncode == 1
    assert "state_dir_locked" in r.stderr


def _servers(cluster: Cluster) -> list[str]:
    path = cluster.root / "etcd-servers"
    return path.read_text().strip().split(",") if path.exists() else []


def _apiserver_section(cluster: Cluster) -> str:
    reload_log = cluster.root / "reloads.log"
    return (
        "[apiserver]\n"
        f'etcd_servers_file = "{cluster.root / "etcd-servers"}"\n'
        f'reload_command = ["sh", "-c", "cat {cluster.root / "etcd-servers"} >> {reload_log}"]\n'
    )


def test_apiserver_traffic_follows_health_and_swap(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c = make_cluster()
    c.write_config(["m1", "m2", "m3"], extra=_apiserver_section(c))
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    all3 = [c.client_url(n) for n in ("m1", "m2", "m3")]
    # the op's "ok" event is logged a moment after it wrote the file: wait for both, or
    # that event lands after the mark below and reads as part of the swap
    wait_for(lambda: _servers(c) == all3 and any(
        e["op"] == "publish-endpoints" and e["outcome"] == "ok" for e in c.events("op")),
        20, "all three published")

    # A swap: m3 leaves the file before it is stopped; m4 appears once promoted.
    mark = c.mark()
    c.write_config(["m1", "m2", "m4"], extra=_apiserver_section(c))
    c.wait_healthy(["m1", "m2", "m4"], timeout=90)
    want = [c.client_url(n) for n in ("m1", "m2", "m4")]
    wait_for(lambda: _servers(c) == want, 20, "m4 published")

    def published_after_promote() -> list[str] | None:
        ops = [e["op"] for e in c.events("op", since=mark) if e["outcome"] == "ok"]
        done = "promote-member" in ops and "publish-endpoints" in ops[ops.index("promote-member"):]
        return ops if done else None

    # The file is written inside the op; its "ok" event follows a moment later.
    ops = wait_for(published_after_promote, 20, "publish-endpoints logged after promote")
    traffic = ("stop-apiserver-traffic", "publish-endpoints")
    # The replacement itself, in the seed's order; traffic ops around it may
    # repeat if a member's health flaps on a loaded machine.
    assert [o for o in ops if o not in traffic] == [
        "stop-member", "remove-member", "add-member", "start-member", "promote-member"], ops
    assert ops[0] == "stop-apiserver-traffic", ops
    # every version of the file the reload command saw: m3 never after the cut,
    # m4 never before it was a voter.
    versions = (c.root / "reloads.log").read_text().split()
    cut = versions.index(",".join(c.client_url(n) for n in ("m1", "m2")))
    assert all(c.client_url("m3") not in v for v in versions[cut:])
    assert all(c.client_url("m4") not in v for v in versions[:cut + 1])


def test_invalid_config_edit_is_rejected_and_last_good_kept(cluster: Cluster) -> None:
    good = cluster.config_path.read_text()
    mark = cluster.mark()
    cluster.config_path.write_text(good + "\n[[members]]\nname = \"m1\"\naddress = \"nope\"\n")
    rejected = wait_for(lambda: cluster.events("config_rejected", since=mark), 20,
                        "config_rejected event")
    assert any("members[3].address" in p for p in rejected[0]["problems"])
    assert cluster.daemon is not None and cluster.daemon.poll() is None
    # nothing was done on the bad config; a fixed config is picked up again
    assert cluster.events("op", since=mark) == []
    mark = cluster.mark()
    cluster.write_config(["m1", "m2", "m3", "m4"])
    cluster.wait_healthy(["m1", "m2", "m3", "m4"], timeout=90)
    assert cluster.events("config_reloaded", since=mark)


def test_sighup_reloads_config(cluster: Cluster) -> None:
    mark = cluster.mark()
    assert cluster.daemon is not None
    cluster.daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: cluster.events("config_reloaded", since=mark), 20, "reload on SIGHUP")


def test_removing_a_member_from_config(cluster: Cluster) -> None:
    mark = cluster.mark()
    cluster.write_config(["m1", "m2"])
    cluster.wait_healthy(["m1", "m2"], timeout=60)
    ops = cluster.ok_ops(mark, through="remove-member")
    assert ops == ["stop-member", "remove-member"], ops
    assert cluster.member_pid("m3") is None


def test_plan_prints_ops_and_changes_nothing(cluster: Cluster) -> None:
    cluster.stop_daemon()
    cluster.write_config(["m1", "m2", "m4"])
    before = cluster.etcdctl("member", "list").stdout
    r = cluster.cli("plan")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("phase: member-remove")
    assert lines[1:3] == ["1. stop-member m3", "2. remove-member m3"]
    assert lines[3].startswith("versions: ")  # what the plan rests on; nothing after it
    assert lines[4:] == []
    r = cluster.cli("plan", "--output", "json")
    assert [o["op"] for o in __import__("json").loads(r.stdout)["ops"]] == [
        "stop-member", "remove-member"]
    assert cluster.etcdctl("member", "list").stdout == before
    assert cluster.member_pid("m3") is not None


def test_hung_member_does_not_stall_the_loop(cluster: Cluster) -> None:
    pid = cluster.member_pid("m3")
    assert pid
    mark = cluster.mark()
    os.kill(pid, signal.SIGSTOP)
    try:
        def m3_unhealthy() -> bool:
            return any(not m["healthy"] for e in cluster.events("health", since=mark)
                       for m in e["members"] if m["name"] == "m3")

        wait_for(m3_unhealthy, 20, "the daemon to report hung m3 unhealthy")
        # cycles keep coming, each bounded by the probe deadline, not stuck on m3
        n = len(cluster.events("cycle", since=mark))
        wait_for(lambda: len(cluster.events("cycle", since=mark)) >= n + 2, 20, "more cycles")
        assert cluster.member_pid("m3") == pid, "a hung (not dead) member was restarted"
    finally:
        os.kill(pid, signal.SIGCONT)
    cluster.wait_healthy(["m1", "m2", "m3"], timeout=30)


def test_history_records_ops_and_steps(cluster: Cluster) -> None:
    import json

    pid = cluster.member_pid("m1")
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: cluster.member_pid("m1") not in (None, pid), 30, "m1 restarted")

    def recorded() -> list[dict[str, str]]:
        r = cluster.cli("history", "-n", "20", "--output", "json")
        assert r.returncode == 0, r.stderr
        records = [json.loads(line) for line in r.stdout.splitlines()]
        done = [x for x in records if x["op"] == "restart-member" and x["event"] == "op-end"]
        return records if done else []

    records = wait_for(recorded, 30, "the restart's op-end in the history")
    restart = [x for x in records if x["op"] == "restart-member" and x["event"] == "op-end"]
    assert restart and restart[-1]["outcome"] == "ok" and restart[-1]["targets"] == "m1"
    steps = [x["step"] for x in records
             if x["op"] == "restart-member" and x["event"] == "step-end"]
    assert steps[-3:] == ["install-tls", "start-process", "watch-start"]
    table = cluster.cli("history", "-n", "3")
    assert "restart-member" in table.stdout and "m1" in table.stdout
    bad = cluster.cli("history", "-n", "0")
    assert bad.returncode == 2 and "-n" in bad.stderr


def test_out_of_band_member_is_removed(cluster: Cluster) -> None:
    stray = f"https://{cluster.address_of('x9')}:2380"
    mark = cluster.mark()
    # etcd 3.5 refuses MemberAdd for ~5 s after a member connected to its peers
    wait_for(lambda: cluster.etcdctl("member", "add", "x9", f"--peer-urls={stray}",
                                     "--learner").returncode == 0, 30, "etcdctl member add")
    wait_for(lambda: "x9" not in cluster.etcdctl("member", "list").stdout
             and stray not in cluster.etcdctl("member", "list").stdout,
             30, "the stray learner removed")
    ops = cluster.ok_ops(mark, through="remove-member")
    assert "add-member" not in ops
    cluster.wait_healthy(["m1", "m2", "m3"])


def test_a_member_that_dies_while_a_cycle_runs_is_restarted_at_once(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """The wake-up of a death during a cycle must not be lost until the next probe.

    `loop-slow` makes each cycle end 1 s after its `cycle` line; m2 is killed
    inside that second, after the cycle looked at it. The probe comes every
    300 s (the most the config allows), so a restart within the wait below can
    only come from the wake-up: the test waits for it, it times nothing.
    """
    c = make_cluster(probe_interval=300.0)
    c.start_daemon(env={FAILPOINT_ENV: "loop-slow"})
    c.wait_healthy(["m1", "m2", "m3"])
    pid = c.member_pid("m2")
    assert pid and c.daemon is not None
    mark = c.mark()
    c.daemon.send_signal(signal.SIGHUP)  # one cycle now (a reload is a full cycle)
    wait_for(lambda: c.events("cycle", since=mark), 10, "the cycle after SIGHUP",
             abort=c.daemon_died)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: c.member_pid("m2") not in (None, pid), 120, "m2 restarted",
             abort=c.daemon_died)


def test_member_exit_and_config_edit_wake_the_loop_before_the_probe(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """With a 300 s probe, a killed member (pidfd) and a config edit (inotify) act at once:
    what happens within the waits below (well under 300 s) was woken, not probed."""
    c = make_cluster(probe_interval=300.0)
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    pid = c.member_pid("m2")
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: c.member_pid("m2") not in (None, pid), 120, "m2 restarted")
    mark = c.mark()
    c.write_config(["m1", "m2"])
    wait_for(lambda: c.events("config_reloaded", since=mark), 120, "config reloaded")


def test_an_edit_made_while_the_daemon_starts_is_not_missed(
        make_cluster: Callable[..., Cluster], real_etcd: str) -> None:
    c = make_cluster(["m1"])
    c.write_config(["m1", "m2"])
    edit = c.root / "edit.toml"
    edit.write_bytes(c.config_path.read_bytes())
    c.write_config(["m1"])
    done = c.root / "edited"
    cfg = shlex.quote(str(c.config_path))
    # `ckeetcd run` asks the etcd binary about itself after reading the config and before
    # the loop starts: the operator's edit lands right in that gap.
    wrapper = c.root / "etcd-that-edits-the-config"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"if [ ! -e {shlex.quote(str(done))} ]; then\n"
        f"    : > {shlex.quote(str(done))}\n"
        f"    cat {shlex.quote(str(edit))} > {cfg}.new && mv -f {cfg}.new {cfg}\n"
        "fi\n"
        f'exec {shlex.quote(real_etcd)} "$@"\n')
    wrapper.chmod(0o755)
    mark = c.mark()
    c.start_daemon(env={ETCD_BINARY_ENV: str(wrapper)})
    c.wait_healthy(["m1", "m2"], timeout=90)
    assert done.exists()
    reloaded = c.events("config_reloaded", since=mark)
    assert reloaded and reloaded[0]["members"] == ["m1", "m2"], reloaded

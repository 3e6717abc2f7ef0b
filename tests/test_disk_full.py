"""A member whose disk fills (its member dir on a small tmpfs), then is freed.

What happens (etcd 3.5): the member's next backend commit fails with ENOSPC
and etcd exits ("fatal: failed to commit tx: ... no space left on device").
The daemon restarts it, and each start fails too (the pidfile cannot be
written, or etcd dies again at once, its fatal line not fitting in its log):
a crash loop, held by the restart back-off (1, 2, 4, 8 s, ...). Writes go on
through the other two members. Once space is back the daemon restarts the
member at once, not at its next back-off slot (up to 5 minutes later), and it
catches up on what it missed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ckeetcd.etcd import EtcdError
from tests.harness import Cluster, wait_for
from tests.soak import disk
from tests.soak.disk import Disks

pytestmark = pytest.mark.usefixtures("real_etcd")
NAMES = ["m1", "m2", "m3"]


@pytest.fixture
def on_disks(tmp_path: Path) -> Iterator[tuple[Cluster, Disks]]:
    """A cluster whose members each live on a 512 MiB tmpfs (unmounted after the members
    stopped; a killed run's mounts go at the next run's sweep)."""
    reason = disk.available()
    if reason:
        pytest.skip(reason)
    disk.sweep()
    root = tmp_path / "c"
    root.mkdir()
    c = Cluster(root, NAMES)
    disks = Disks(c.state_dir / "members")
    try:
        for n in NAMES:
            disks.add(n)
        c.start_daemon()
        c.wait_healthy(NAMES, timeout=90)
        yield c, disks
    finally:
        c.cleanup()
        disks.close()


def put_some(c: Cluster, prefix: str, n: int) -> int:
    """Put `n` keys through m1; how many were acknowledged."""
    async def go() -> int:
        acked = 0
        async with c.client("m1") as client:
            for i in range(n):
                try:
                    await client.put(f"{prefix}{i:04d}".encode(), b"x" * 1000)
                    acked += 1
                except EtcdError:
                    pass
        return acked

    return asyncio.run(go())


def wall(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_a_member_whose_disk_filled_restarts_as_soon_as_space_is_back(
        on_disks: tuple[Cluster, Disks]) -> None:
    c, disks = on_disks
    mark = c.mark()
    assert disks.fill("m2") > 0

    def m2_exits() -> list[dict[str, Any]]:
        put_some(c, "/during/", 20)  # etcd only fails when it has something to commit
        return [e for e in c.events("member_exited", since=mark) if e["member"] == "m2"]

    first = wait_for(m2_exits, 60, "m2's etcd to exit", abort=c.daemon_died)[0]
    # etcd names the full disk, in its fatal line or (when another error is its last
    # word, e.g. a request it could not apply) among the last lines it logged
    said = [first["reason"], *first["log_tail"]]
    assert any("no space left on device" in line for line in said), first
    # The daemon keeps trying, backing off, while the disk stays full.
    looped = wait_for(lambda: [e for e in m2_exits() if e["starts"] >= 4], 90,
                      "four starts of m2 on its full disk", abort=c.daemon_died)[-1]
    assert looped["disk_free"] < 1024 * 1024, looped
    assert c.member_pid("m2") is None
    held_until = wall(looped["next_start"])
    assert put_some(c, "/meanwhile/", 50) == 50  # quorum holds: m1 and m3

    freed = c.mark()
    disks.free("m2")
    c.wait_healthy(NAMES, timeout=60)
    lifted = wait_for(lambda: c.events("restart_hold_lifted", since=freed), 30,
                      "restart_hold_lifted", abort=c.daemon_died)
    assert lifted[0]["member"] == "m2" and lifted[0]["disk_free"] > 64 * 1024 * 1024
    started = [e for e in c.events("op_step", since=freed)
               if e["targets"] == "m2" and e["step"] == "start-process" and e["outcome"] == "ok"]
    assert started and wall(started[0]["timestamp"]) < held_until, (started, looped)

    async def read_m2() -> int:
        async with c.client("m2") as client:
            return len(await client.get_prefix(b"/meanwhile/"))

    assert asyncio.run(read_m2()) == 50  # it caught up on what it missed

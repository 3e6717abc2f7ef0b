"""What an application's certificate can do beyond its prefix, on real etcd.

etcd's RBAC checks key permissions on KV and watch requests and admin rights
on auth, member, snapshot and defragment requests; cluster-wide maintenance
calls (compaction, leader transfer, leases, status, member list) need no
permission at all on older releases; newer patch releases require root for
Status, Compact and MoveLeader (measured: allowed on 3.5.1, refused on
3.5.30). docs/operator-guide.md ("What a user certificate can do")
states exactly this table: if an etcd release changes it, this test fails and
the guide must follow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Cluster, ckecli, running_cluster


@pytest.fixture(scope="module")
def app(module_tmp_path: Path,
        real_etcd: str) -> Iterator[tuple[Cluster, object]]:
    for c in running_cluster(module_tmp_path):
        r = ckecli(c.config_path, "user-add", "app", "/app/")
        assert r.returncode == 0, r.stderr
        yield c, c.client_cert("app")


def server_version(cluster: Cluster) -> tuple[int, ...]:
    out = cluster.etcdctl("endpoint", "status", "-w", "json",
                          endpoints=cluster.endpoints(["m1"])).stdout
    return tuple(int(x) for x in json.loads(out)[0]["Status"]["version"].split("."))


# Status, Compact and MoveLeader need root from these releases on (measured:
# 3.5.1 and 3.4.23 let any user call them; 3.5.30 refuses). Below the first
# release measured to refuse, a release is expected to allow them.
ADMIN_MAINTENANCE_SINCE = {3: {4: (3, 4, 999), 5: (3, 5, 30)}}


def admin_only_maintenance(version: tuple[int, ...]) -> bool:
    since = ADMIN_MAINTENANCE_SINCE.get(version[0], {}).get(version[1])
    return since is not None and version >= since


# (etcdctl arguments, allowed for a user with readwrite on /app/ only)
REACH = [
    (["put", "/app/k", "v"], True),
    (["get", "/app/k"], True),
    (["put", "/other", "v"], False),
    (["get", "/other"], False),
    (["get", "/", "--prefix"], False),
    (["endpoint", "hashkv"], False),
    (["defrag"], False),
    (["member", "add", "x", "--peer-urls=https://127.0.0.9:2380"], False),
    (["member", "remove", "1234"], False),
    (["user", "list"], False),
    (["role", "list"], False),
    (["auth", "disable"], False),
    # beyond the prefix, allowed by etcd's own model:
    (["member", "list"], True),
    (["endpoint", "status"], None),  # None: as the release decides (see above)
    (["compaction", "1"], None),
    (["lease", "grant", "60"], True),
    (["lease", "list"], True),
    (["alarm", "list"], True),
]


@pytest.mark.parametrize(("args", "allowed"), REACH, ids=[" ".join(a) for a, _ in REACH])
def test_what_a_user_certificate_reaches(app: tuple[Cluster, object], args: list[str],
                                         allowed: bool | None) -> None:
    cluster, tls = app
    if allowed is None:
        allowed = not admin_only_maintenance(server_version(cluster))
    r = cluster.etcdctl(*args, tls=tls, endpoints=cluster.endpoints(["m1"]))  # type: ignore[arg-type]
    assert (r.returncode == 0) is allowed, r.stderr[-400:]
    if not allowed and args[0] not in ("defrag",):
        assert "permission denied" in r.stderr or "PermissionDenied" in r.stderr, r.stderr[-400:]


def test_move_leader_as_the_release_decides_and_snapshot_is_refused(
        app: tuple[Cluster, object], tmp_path: Path) -> None:
    cluster, tls = app
    allowed = not admin_only_maintenance(server_version(cluster))
    members = cluster.etcdctl("member", "list").stdout.splitlines()
    status = cluster.etcdctl("endpoint", "status", "--cluster").stdout
    leader_url = next(line.split(",")[0] for line in status.splitlines()
                      if line.split(",")[4].strip() == "true")
    follower = next(line.split(",")[0] for line in members
                    if leader_url.split("//")[1] not in line)
    r = cluster.etcdctl("move-leader", follower, tls=tls,  # type: ignore[arg-type]
                        endpoints=leader_url)
    if allowed:
        assert r.returncode == 0 and "Leadership transferred" in r.stdout, r.stderr[-400:]
    else:
        assert r.returncode != 0 and "permission denied" in r.stderr, r.stderr[-400:]
    snap = cluster.etcdctl("snapshot", "save", str(tmp_path / "s.db"), tls=tls,  # type: ignore[arg-type]
                           endpoints=cluster.endpoints(["m1"]))
    assert snap.returncode != 0
    assert not (tmp_path / "s.db").exists()

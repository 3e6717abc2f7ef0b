"""local-backup, scheduled backups and pre-change snapshots, on real etcd.

Backups are checked with etcd's own tool (`etcdutl snapshot status`), not
only with our code. Bad input must exit 2 having contacted nothing and
written nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import random
import re
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ckeetcd.core.config import load_config
from ckeetcd.etcd.snapshot import verify
from ckeetcd.nodes.local import resolve_etcdutl_binary
from ckeetcd.tasks.backup import (
    NAME_RE,
    _HashingFile,
    backup_time,
    list_backups,
    rotate,
    save_verified,
)
from tests.harness import Cluster, wait_for

pytestmark = pytest.mark.etcd

CREATED = re.compile(r"^created backup (etcd-\d{8}-\d{6}\.backup)$")


def etcdutl_status(path: Path) -> dict[str, int]:
    """What etcd's own tool says about a snapshot file (raises when it refuses it)."""
    r = subprocess.run([resolve_etcdutl_binary(""), "snapshot", "status", "-w", "json",
                        str(path)], capture_output=True, text=True, timeout=60, check=True)
    status: dict[str, int] = json.loads(r.stdout)
    return status


def fill(cluster: Cluster, prefix: str, count: int, size: int) -> list[bytes]:
    """Put `count` keys of `size` random bytes under `prefix`; return the keys."""
    keys = [f"{prefix}{i:05d}".encode() for i in range(count)]

    async def go() -> None:
        async with cluster.client("m1") as c:
            c.timeout = 10.0
            for k in keys:
                await c.put(k, os.urandom(size))

    asyncio.run(go())
    return keys


def created_name(stdout: str) -> str:
    lines = stdout.splitlines()
    m = CREATED.match(lines[0]) if lines else None
    assert m, stdout
    return m.group(1)


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """Make `folder` refuse new files, even for root (immutable attribute)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)


# ---- pure pieces ---------------------------------------------------------------------


def test_hashing_file_ignores_chunk_boundaries(tmp_path: Path) -> None:
    """The trailer check holds however the stream is cut (chunks shorter than the hash too)."""
    rng = random.Random(7)
    body = rng.randbytes(512 * 37)
    blob = body + hashlib.sha256(body).digest()
    for trial in range(20):
        cuts = rng.sample(range(1, len(blob)), k=rng.randint(1, 60))
        if trial % 2:  # short pieces around the trailer
            cuts += [len(blob) - k for k in (1, 5, 31, 32, 33)]
        cuts = sorted(set(cuts))
        pieces = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)], strict=True)]
        fd = os.open(tmp_path / f"f{trial}", os.O_WRONLY | os.O_CREAT, 0o600)
        sink = _HashingFile(fd)
        for p in pieces:
            sink.write(p)
        os.close(fd)
        sink.check("test")
        assert (tmp_path / f"f{trial}").read_bytes() == blob
    fd = os.open(tmp_path / "bad", os.O_WRONLY | os.O_CREAT, 0o600)
    sink = _HashingFile(fd)
    sink.write(blob[:-1] + bytes([blob[-1] ^ 1]))
    os.close(fd)
    with pytest.raises(Exception, match="integrity check failed"):
        sink.check("test")


def test_rotation_keeps_newest_and_leaves_other_files(tmp_path: Path) -> None:
    names = [f"etcd-2026010{d}-120000.backup" for d in range(1, 8)]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    others = ["etcd-latest.backup", "notes.txt", "etcd-20260101-120000.backup.old"]
    for n in others:
        (tmp_path / n).write_bytes(b"y")
    removed = rotate(tmp_path, 3)
    assert [p.name for p in removed] == names[:4]
    assert [p.name for p in list_backups(tmp_path)] == names[4:]
    assert all((tmp_path / n).exists() for n in others)
    assert backup_time(tmp_path / names[-1]) == dt.datetime(2026, 1, 7, 12, tzinfo=dt.timezone.utc)


class _FakeStream:
    """An EtcdClient stand-in whose snapshot stream is cut short or corrupted."""

    endpoint = "https://fake:2379"

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    async def snapshot(self, timeout: float = 600.0) -> AsyncIterator[bytes]:
        for i in range(0, len(self.blob), 32 * 1024):
            yield self.blob[i:i + 32 * 1024]


@pytest.mark.parametrize("damage", ["truncated", "flipped", "short"])
async def test_a_bad_stream_leaves_no_file(tmp_path: Path, damage: str) -> None:
    body = os.urandom(4096 * 600)
    blob = body + hashlib.sha256(body).digest()
    if damage == "truncated":
        blob = blob[:-4096]
    elif damage == "flipped":
        blob = blob[:5000] + bytes([blob[5000] ^ 0xFF]) + blob[5001:]
    else:
        blob = blob[:20]
    with pytest.raises(Exception, match=r"integrity check failed|incomplete snapshot"):
        stream: Any = _FakeStream(blob)
        await save_verified(stream, tmp_path / "etcd-20260101-000000.backup")
    assert list(tmp_path.iterdir()) == []


# ---- ckecli etcd local-backup --------------------------------------------------------


def test_local_backup_verifies_and_rotates(cluster: Cluster, tmp_path: Path) -> None:
    """A few MB of data: the file exists, etcdutl accepts it, rotation keeps N."""
    keys = fill(cluster, "/data/", 40, 100_000)  # ~4 MB
    folder = tmp_path / "backups"
    folder.mkdir()
    folder.chmod(0o750)  # the operator's folder: its mode is left alone
    (folder / "README").write_text("not a backup\n")
    made: list[str] = []
    for i in range(3):
        before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        r = cluster.cli("etcd", "local-backup", f"-dir={folder}", "-max-backups=2")
        assert r.returncode == 0, r.stderr
        name = created_name(r.stdout)
        made.append(name)
        path = folder / name
        stamp = backup_time(path)
        assert stamp is not None and before <= stamp <= dt.datetime.now(dt.timezone.utc)
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.stat().st_size > 4_000_000
        status = etcdutl_status(path)
        assert status["totalKey"] >= len(keys)
        verify(path)
        removed = [line.removeprefix("removed ") for line in r.stdout.splitlines()[1:]]
        assert removed == ([made[0]] if i == 2 else []), r.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["README", *made[1:]]
    assert len(set(made)) == 3
    assert folder.stat().st_mode & 0o777 == 0o750
    new = tmp_path / "new" / "backups"  # missing, with a missing parent: made 0700
    r = cluster.cli("etcd", "local-backup", f"-dir={new}")
    assert r.returncode == 0, r.stderr
    assert [p.name for p in new.iterdir()] == [created_name(r.stdout)]
    assert new.stat().st_mode & 0o777 == 0o700 and new.parent.stat().st_mode & 0o777 == 0o700


def test_local_backup_defaults_come_from_the_config(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(extra="[backup]\nmax_backups = 1\n")
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    folder = c.state_dir / "backups"
    assert not folder.exists()
    names = []
    for _ in range(2):
        r = c.cli("etcd", "local-backup")
        assert r.returncode == 0, r.stderr
        names.append(created_name(r.stdout))
    assert r.stdout.splitlines()[1:] == [f"removed {names[0]}"]
    assert [p.name for p in folder.iterdir()] == [names[1]]
    assert folder.stat().st_mode & 0o777 == 0o700


def test_local_backup_bad_input_exits_2_and_changes_nothing(
    make_cluster: Callable[..., Cluster], tmp_path: Path,
) -> None:
    """Checked before anything is contacted: the cluster is not even running."""
    c = make_cluster()
    c.state_dir.mkdir()
    folder = tmp_path / "out"
    folder.mkdir()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        ([f"-dir={a_file / 'sub'}"], "-dir", "cannot create"),
        ([f"-dir={a_file}"], "-dir", "not a directory"),
        (["-dir="], "-dir", "must not be empty"),
        ([f"-dir={folder}", "-max-backups=0"], "-max-backups", "between 1 and 10000"),
        ([f"-dir={folder}", "-max-backups=-3"], "-max-backups", "between 1 and 10000"),
        ([f"-dir={folder}", "-max-backups=ten"], "-max-backups", "not an integer"),
        ([f"-dir={folder}", "-max-copies=3"], "unrecognized arguments", "-max-copies"),
    ]
    for args, names, why in cases:
        r = c.cli("etcd", "local-backup", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert names in r.stderr and why in r.stderr, (args, r.stderr)
        assert r.stdout == ""
    with unwritable(folder):
        r = c.cli("etcd", "local-backup", f"-dir={folder}")
        assert r.returncode == 2, r.stderr
        assert "-dir" in r.stderr and "not writable" in r.stderr, r.stderr
    assert list(folder.iterdir()) == []
    assert a_file.read_text() == "x"
    assert not (c.state_dir / "backups").exists()
    assert not (c.state_dir / "members").exists()


def test_local_backup_without_a_healthy_member_keeps_nothing(
    make_cluster: Callable[..., Cluster], tmp_path: Path,
) -> None:
    c = make_cluster()
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    c.stop_daemon()
    assert c.cli("stop-members").returncode == 0
    folder = tmp_path / "b"
    folder.mkdir()
    r = c.cli("etcd", "local-backup", f"-dir={folder}")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no member answered as a healthy voter" in r.stderr
    assert r.stdout == ""
    assert list(folder.iterdir()) == []


# ---- the daemon ----------------------------------------------------------------------


def test_scheduled_backups_keep_max_backups(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(extra="[backup]\ninterval = 1.0\nmax_backups = 2\n")
    folder = c.state_dir / "backups"
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    wait_for(lambda: len(c.events("backup_removed")) >= 2, 30, "two rotations",
             abort=c.daemon_died)
    created = c.events("backup_created")
    assert len(created) >= 4
    assert all(e["op"] == "scheduled-backup" and e["outcome"] == "ok" for e in created)
    stamps = [backup_time(Path(e["path"])) for e in created]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps) if a and b]
    assert all(1 <= g <= 3 for g in gaps), gaps  # at the interval (names have 1 s resolution)
    backups = list_backups(folder)
    assert 1 <= len(backups) <= 2
    for p in backups:
        assert NAME_RE.match(p.name)
        etcdutl_status(p)
    removed = {Path(e["path"]).name for e in c.events("backup_removed")}
    assert removed.isdisjoint(p.name for p in backups)
    # A daemon restart neither repeats a backup nor waits a full interval from scratch.
    c.stop_daemon()
    mark = c.mark()
    c.write_config(["m1", "m2", "m3"], extra="[backup]\ninterval = 3600\nmax_backups = 2\n")
    c.start_daemon()
    wait_for(lambda: c.events("cycle", since=mark), 30, "a cycle", abort=c.daemon_died)
    assert c.events("backup_created", since=mark) == []


def test_a_membership_change_leaves_a_pre_change_snapshot(
    make_cluster: Callable[..., Cluster],
) -> None:
    """Swap m3 for m4: remove and add each snapshot first; pre_change_keep rotates them."""
    c = make_cluster(extra="[backup]\npre_change_keep = 1\n")
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    folder = c.state_dir / "snapshots"
    c.write_config(["m1", "m2", "m4"])
    c.wait_healthy(["m1", "m2", "m4"], timeout=90)
    steps = [e for e in c.events("op_step") if e.get("step") == "pre-change-snapshot"]
    assert {e["op"] for e in steps} == {"remove-member", "add-member"}
    assert all(e["outcome"] == "ok" for e in steps)
    saved = [Path(e["path"]) for e in c.events("snapshot_saved")]
    assert len(saved) == 2
    left = sorted(folder.glob("pre-change-*.db"))
    assert left == [saved[-1]]  # pre_change_keep = 1 from the config
    verify(left[0])
    assert etcdutl_status(left[0])["totalKey"] > 0
    assert load_config(c.config_path).backup.pre_change_keep == 1

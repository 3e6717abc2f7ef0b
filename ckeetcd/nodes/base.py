"""How a member runs on its node, behind one small interface.

The decision logic only ever sees `Runtime` values; which machine a member
lives on and whether it is a supervised process or a systemd unit is the
business of a `MemberRuntime` implementation (local today, SSH later).
"""

from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ckeetcd.core.config import EtcdConfig
from ckeetcd.core.model import MemberExit, Runtime
from ckeetcd.core.peercn import FLAG as CN_FLAG

TLS_FILES = ("ca.crt", "server.crt", "server.key", "peer.crt", "peer.key")
# In a member dir while `ckeetcd restore` works on it: every daemon keeps its
# hands off that member (see decide), whichever node the daemon runs on.
RESTORE_MARKER = "RESTORING"
MARKER_LIMIT = 500  # bytes of the marker shown in logs
# A data dir moved aside when its member left: `data.removed-STAMP`, STAMP
# sorting as time does. Only these are ever deleted (by retention); other
# archives (`data.before-restore-*`) are only counted.
REMOVED_ARCHIVE = re.compile(r"data\.removed-\d{8}T\d{6}\.\d{6}Z")
ARCHIVE_PREFIX = "data."
STAGING = "data.restoring"  # a restore's half-written output, not an archive
# A restored cluster's revisions start this far above the snapshot's, and everything
# up to there counts as compacted (etcdutl --bump-revision/--mark-compacted: later
# 3.5 patch releases, not 3.5.1). Without it, revisions after a restore repeat
# ones that clients (a kube-apiserver's watch cache, informers) saw before it
# with other content: a watcher resumes at a revision it believes it has and
# never sees the rollback. With it, every revision after the restore is higher
# than any seen before (as long as fewer than a billion were made between the
# backup and the restore), and watchers older than the restore are told
# "compacted" and re-list.
RESTORE_BUMP = 1_000_000_000


RESTORED_START = re.compile(r"restored revisions start at (\d+)")


def restore_bump(snapshot_revision: int, highest_seen: int, earlier_start: int = 0) -> int:
    """How far a restore bumps: RESTORE_BUMP above the snapshot, above the highest
    revision a member still answered with, and above where an earlier, interrupted
    run's restored cluster started (its RESTORING marker says; that cluster may have
    served from there on, and a member that served need not answer now)."""
    return max(RESTORE_BUMP + max(highest_seen - snapshot_revision, 0),
               earlier_start + RESTORE_BUMP - snapshot_revision)


def restored_start(markers: list[str]) -> int:
    """The highest "restored revisions start at N" among RESTORING markers (0: none)."""
    return max((int(m.group(1)) for note in markers
                if (m := RESTORED_START.search(note))), default=0)


def restore_bump_flags(restore_help: str, bump: int = RESTORE_BUMP) -> list[str]:
    """The etcdutl flags that bump a restored cluster's revisions by `bump`, if this
    etcdutl (its `snapshot restore --help` text) has them; [] for an older one."""
    if "--bump-revision" not in restore_help or "--mark-compacted" not in restore_help:
        return []
    return [f"--bump-revision={bump}", "--mark-compacted"]


LOG_MAX_BYTES = 16 * 1024 * 1024  # etcd.log is rotated to etcd.log.1 at a start past this
START_MARK = "--- "  # the line the runtimes write to etcd.log before each start
LOG_TAIL_LINES = 20
LOG_TAIL_WIDTH = 300  # characters per line (etcd's fatal lines carry stack traces)
LOG_TAIL_BYTES = 64 * 1024  # read from the end of the log


def last_run(text: str) -> list[str]:
    """The lines of the latest run in an etcd.log excerpt, without the noise of a crash:
    flag usage after a flag error, the goroutine dump after a Go panic."""
    run = text.splitlines()
    starts = [i for i, line in enumerate(run) if line.startswith(START_MARK)]
    if starts:
        run = run[starts[-1] + 1:]
    for i, line in enumerate(run):
        if line.rstrip() == "Usage:" or line.startswith("goroutine "):
            run = run[:i]
            break
    return [line.rstrip() for line in run if line.strip()]


def log_tail(text: str, lines: int = LOG_TAIL_LINES,
             width: int = LOG_TAIL_WIDTH) -> tuple[str, ...]:
    """The last `lines` lines of the latest run (see last_run), each cut at `width`."""
    return tuple(_cut(line, width) for line in last_run(text)[-lines:])


def exit_reason(text: str, width: int = LOG_TAIL_WIDTH, fatal_only: bool = False) -> str:
    """The line of the latest run that best says why etcd stopped ("" when none does):
    its last fatal or panic entry, else a Go panic or flag error, else its last error,
    else its last warning, else its last line. `fatal_only` (a process killed by a
    signal): only the first two, since a warning logged earlier did not end it."""
    entries = [_entry(line) for line in last_run(text)]  # (level, what it says)
    ladder: tuple[tuple[str, ...], ...] = (("fatal", "panic", "dpanic"), ("raw-error",))
    if not fatal_only:
        ladder += (("error",), ("warn",))
    for wanted in ladder:
        found = [said for level, said in entries if level in wanted]
        if found:
            return _cut(found[-1], width)
    return _cut(entries[-1][1], width) if entries and not fatal_only else ""


def _entry(line: str) -> tuple[str, str]:
    """(level, what it says) of one etcd log line: a zap JSON entry or plain text."""
    if line.startswith("{"):
        try:
            e = json.loads(line)
        except ValueError:
            return "", line
        if isinstance(e, dict):
            level, msg = str(e.get("level", "")), str(e.get("msg", ""))
            error = f": {e['error']}" if e.get("error") else ""
            return level, f"{level}: {msg}{error}"
    if line.startswith(("panic: ", "flag provided but not defined", "invalid value ")):
        return "raw-error", line
    return "", line


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[:width] + "..."


def exit_of(returncode: int | None, text: str, why_unknown: str) -> MemberExit:
    """A MemberExit from a Popen-style return code (negative: killed by that signal) and
    the end of the member's log."""
    tail, reason = log_tail(text), exit_reason(text)
    if returncode is None:
        return MemberExit(f"unknown ({why_unknown})", log_tail=tail, reason=reason)
    if returncode < 0:
        return killed_by(-returncode, text)
    return MemberExit(f"exit status {returncode}", code=returncode, log_tail=tail,
                      reason=reason)


def killed_by(signum: int, text: str) -> MemberExit:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = "?"
    return MemberExit(f"killed by signal {signum} ({name})", signal=signum,
                      log_tail=log_tail(text), reason=exit_reason(text, fatal_only=True))


@dataclass(frozen=True)
class Archive:
    """One data dir moved aside in a member dir, and the disk space it takes."""

    name: str
    bytes: int


def is_archive(name: str) -> bool:
    return name.startswith(ARCHIVE_PREFIX) and name != STAGING


def prunable(names: list[str], keep: int) -> list[str]:
    """The removed-member archives beyond the newest `keep`, oldest first."""
    removed = sorted(n for n in names if REMOVED_ARCHIVE.fullmatch(n))
    return removed[:max(len(removed) - max(keep, 0), 0)]


@dataclass(frozen=True)
class MemberSpec:
    """Everything needed to start one etcd member."""

    name: str
    client_url: str
    peer_url: str
    cluster_token: str
    initial_cluster: tuple[tuple[str, str], ...]
    initial_state: str  # "new" or "existing"
    # The file in the member's tls dir that --peer-trusted-ca-file names: the peer CA
    # (peer-ca.crt), or ca.crt in a cluster made before the peer CA existed.
    peer_trust: str = "ca.crt"
    # The file --trusted-ca-file names: ca.crt, or a client CA rotation's bundle.
    client_trust: str = "ca.crt"
    # --peer-cert-allowed-cn ("" = not given): ckeetcd.core.peercn.start_flag.
    peer_allowed_cn: str = ""


class MemberRuntime(Protocol):
    """Start, stop and inspect members; place their TLS files and data."""

    async def inspect(self, name: str) -> Runtime: ...

    async def connect(self, name: str) -> None:
        """Open what inspecting `name` needs (its node's SSH connection) within that
        connection's own deadline; OSError when it cannot. Nothing to do locally."""

    async def start(self, spec: MemberSpec) -> int: ...

    async def stop(self, name: str, timeout: float = 10.0) -> bool: ...

    async def archive_data(self, name: str, label: str = "removed") -> Path | None: ...

    async def exit_info(self, name: str) -> MemberExit:
        """How the member's last etcd process ended, and the last lines it logged."""

    async def archives(self, name: str) -> list[Archive]:
        """The data dirs moved aside in the member's dir (oldest first), with their size."""

    async def prune_archives(self, name: str, keep: int) -> list[Archive]:
        """Delete the removed-member archives beyond the newest `keep`; returns them."""

    async def restore_data(self, name: str, snapshot: Path, spec: MemberSpec,
                           skip_hash_check: bool = False, bump: int = RESTORE_BUMP,
                           ) -> Path: ...

    async def known_members(self) -> list[str]: ...

    async def install_tls(self, name: str, files: dict[str, bytes]) -> None: ...

    async def read_tls(self, name: str, filename: str) -> bytes | None: ...

    async def mark_restoring(self, name: str, note: str | None) -> None:
        """Write the restore marker with `note` in the member dir, or remove it (None)."""


def member_flags(spec: MemberSpec, data_dir: Path, tls_dir: Path, etcd: EtcdConfig) -> list[str]:
    """The etcd command line of a member: TLS everywhere, certificates required."""
    initial = ",".join(f"{n}={u}" for n, u in spec.initial_cluster)
    flags = [
        f"--name={spec.name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={spec.client_url}",
        f"--advertise-client-urls={spec.client_url}",
        f"--listen-peer-urls={spec.peer_url}",
        f"--initial-advertise-peer-urls={spec.peer_url}",
        f"--initial-cluster={initial}",
        f"--initial-cluster-state={spec.initial_state}",
        f"--initial-cluster-token={spec.cluster_token}",
        f"--cert-file={tls_dir / 'server.crt'}",
        f"--key-file={tls_dir / 'server.key'}",
        "--client-cert-auth=true",
        f"--trusted-ca-file={tls_dir / spec.client_trust}",
        f"--peer-cert-file={tls_dir / 'peer.crt'}",
        f"--peer-key-file={tls_dir / 'peer.key'}",
        "--peer-client-cert-auth=true",
        f"--peer-trusted-ca-file={tls_dir / spec.peer_trust}",
        f"--heartbeat-interval={etcd.heartbeat_interval_ms}",
        f"--election-timeout={etcd.election_timeout_ms}",
        "--logger=zap",
        "--log-outputs=stderr",
    ]
    if spec.peer_allowed_cn:
        flags.append(f"{CN_FLAG}={spec.peer_allowed_cn}")
    if etcd.quota_backend_bytes:
        flags.append(f"--quota-backend-bytes={etcd.quota_backend_bytes}")
    flags.extend(etcd.extra_args)
    return flags

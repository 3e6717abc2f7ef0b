"""How a member runs on its node, behind one small interface.

The decision logic only ever sees `Runtime` values; which machine a member
lives on and whether it is a supervised process or a systemd unit is the
business of a `MemberRuntime` implementation (local today, SSH later).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ckeetcd.config import EtcdConfig
from ckeetcd.model import Runtime

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


class MemberRuntime(Protocol):
    """Start, stop and inspect members; place their TLS files and data."""

    async def inspect(self, name: str) -> Runtime: ...

    async def start(self, spec: MemberSpec) -> int: ...

    async def stop(self, name: str, timeout: float = 10.0) -> bool: ...

    async def archive_data(self, name: str, label: str = "removed") -> Path | None: ...

    async def archives(self, name: str) -> list[Archive]:
        """The data dirs moved aside in the member's dir (oldest first), with their size."""

    async def prune_archives(self, name: str, keep: int) -> list[Archive]:
        """Delete the removed-member archives beyond the newest `keep`; returns them."""

    async def restore_data(self, name: str, snapshot: Path, spec: MemberSpec,
                           skip_hash_check: bool = False) -> Path: ...

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
        f"--trusted-ca-file={tls_dir / 'ca.crt'}",
        f"--peer-cert-file={tls_dir / 'peer.crt'}",
        f"--peer-key-file={tls_dir / 'peer.key'}",
        "--peer-client-cert-auth=true",
        f"--peer-trusted-ca-file={tls_dir / 'ca.crt'}",
        f"--heartbeat-interval={etcd.heartbeat_interval_ms}",
        f"--election-timeout={etcd.election_timeout_ms}",
        "--logger=zap",
        "--log-outputs=stderr",
    ]
    if etcd.quota_backend_bytes:
        flags.append(f"--quota-backend-bytes={etcd.quota_backend_bytes}")
    flags.extend(etcd.extra_args)
    return flags

"""One MemberRuntime that sends each member to its own: this machine or SSH.

The decision logic stays unaware of where members live: it asks by name and
the router picks the runtime from the member's `runtime` key. A member that
left the config is still reached where it was: the router keeps what every
config it saw said about it, and learns members only etcd still lists from
their peer URL (address) and the cluster's default runtime.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ckeetcd.core.config import Config
from ckeetcd.core.model import LiveMember, MemberExit, Runtime
from ckeetcd.nodes.base import RESTORE_BUMP, Archive, MemberRuntime, MemberSpec
from ckeetcd.nodes.local import LocalRuntime
from ckeetcd.nodes.ssh import SSHRuntime


def uses_ssh(config: Config) -> bool:
    return config.cluster.runtime == "ssh" or any(m.runtime == "ssh" for m in config.members)


def make_runtime(config: Config, log: Any = None) -> MemberRuntime:
    """LocalRuntime when every member is local (as before), else a RoutedRuntime."""
    if not uses_ssh(config):
        local = LocalRuntime(config.cluster.state_dir, config.etcd)
        local.log_max_bytes = config.maintenance.log_max_bytes
        return local
    return RoutedRuntime(config, log)


class RoutedRuntime:
    """MemberRuntime that dispatches per member name (see the module docstring)."""

    def __init__(self, config: Config, log: Any = None,
                 local: LocalRuntime | None = None) -> None:
        self.local = local or LocalRuntime(config.cluster.state_dir, config.etcd)
        self.ssh = SSHRuntime(config.ssh, config.etcd, {}, log)
        self.kinds: dict[str, str] = {}
        self.default = "local"
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self.local.etcd = config.etcd
        self.ssh.reconfigure(config.ssh, config.etcd)
        self.local.log_max_bytes = self.ssh.log_max_bytes = config.maintenance.log_max_bytes
        self.default = config.cluster.runtime
        self.ssh.binaries = {m.name: m.etcd_binary for m in config.members if m.etcd_binary}
        for m in config.members:
            self.kinds[m.name] = m.runtime
            if m.runtime == "ssh":
                self.ssh.hosts[m.name] = m.node_host

    def learn(self, members: Iterable[LiveMember] | None) -> None:
        """Remember where members the config never named live (their peer URL host)."""
        for m in members or ():
            if not m.name or m.name in self.kinds:
                continue
            host = urlsplit(m.peer_url).hostname if m.peer_url else None
            if host:
                self.kinds[m.name] = self.default
                if self.default == "ssh":
                    self.ssh.hosts[m.name] = host

    def runtime_of(self, name: str) -> MemberRuntime:
        return self.ssh if self.kinds.get(name, self.default) == "ssh" else self.local

    async def close(self) -> None:
        await self.ssh.close()

    # ---- MemberRuntime ------------------------------------------------------------
    async def inspect(self, name: str) -> Runtime:
        return await self.runtime_of(name).inspect(name)

    async def connect(self, name: str) -> None:
        await self.runtime_of(name).connect(name)

    async def start(self, spec: MemberSpec) -> int:
        return await self.runtime_of(spec.name).start(spec)

    async def stop(self, name: str, timeout: float = 10.0) -> bool:
        return await self.runtime_of(name).stop(name, timeout)

    async def archive_data(self, name: str, label: str = "removed") -> Path | None:
        return await self.runtime_of(name).archive_data(name, label)

    async def exit_info(self, name: str) -> MemberExit:
        return await self.runtime_of(name).exit_info(name)

    async def archives(self, name: str) -> list[Archive]:
        return await self.runtime_of(name).archives(name)

    async def prune_archives(self, name: str, keep: int) -> list[Archive]:
        return await self.runtime_of(name).prune_archives(name, keep)

    async def restore_data(self, name: str, snapshot: Path, spec: MemberSpec,
                           skip_hash_check: bool = False, bump: int = RESTORE_BUMP,
                           ) -> Path:
        return await self.runtime_of(name).restore_data(name, snapshot, spec, skip_hash_check,
                                                        bump)

    async def known_members(self) -> list[str]:
        found = set(await self.local.known_members())
        return sorted(found | set(await self.ssh.known_members()))

    async def install_tls(self, name: str, files: dict[str, bytes]) -> None:
        await self.runtime_of(name).install_tls(name, files)

    async def read_tls(self, name: str, filename: str) -> bytes | None:
        return await self.runtime_of(name).read_tls(name, filename)

    async def mark_restoring(self, name: str, note: str | None) -> None:
        await self.runtime_of(name).mark_restoring(name, note)

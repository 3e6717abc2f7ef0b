"""The edges a cycle acts through (member runtime, client pool, observer), for the
daemon and for every command that reads the cluster (status, plan, restore)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ckeetcd.core.config import Config
from ckeetcd.etcd import ClientPool
from ckeetcd.loop.observe import Observer
from ckeetcd.nodes import LocalRuntime, MemberRuntime
from ckeetcd.nodes.router import RoutedRuntime, make_runtime, uses_ssh
from ckeetcd.pki import PEER_CA_CERT
from ckeetcd.support.history import History
from ckeetcd.support.startbook import StartBook
from ckeetcd.tasks.daemoncert import daemon_tls


@dataclass
class Env:
    """The edges a cycle acts through."""

    config: Config
    runtime: MemberRuntime
    pool: ClientPool
    observer: Observer
    log: Any = None

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded config in place: channels (shared with side tasks) stay open."""
        self.config = config
        if isinstance(self.runtime, RoutedRuntime):
            self.runtime.reconfigure(config)
        elif isinstance(self.runtime, LocalRuntime):
            self.runtime.etcd = config.etcd
            self.runtime.log_max_bytes = config.maintenance.log_max_bytes
            if uses_ssh(config):  # a member moved to SSH: route from now on
                self.runtime = RoutedRuntime(config, self.log, local=self.runtime)
                self.observer.runtime = self.runtime
        self.pool.timeout = config.daemon.rpc_timeout
        self.observer.servers_file = config.apiserver.etcd_servers_file
        self.observer.probe_timeout = min(config.daemon.rpc_timeout, 1.0)
        self.observer.renew_before = config.tls.member_cert_renew_before

    async def close(self) -> None:
        await self.pool.close()
        if isinstance(self.runtime, RoutedRuntime):
            await self.runtime.close()


def make_env(config: Config, readonly: bool = False, log: Any = None,
             history: History | None = None) -> Env:
    runtime = make_runtime(config, log)
    pool = ClientPool(daemon_tls(config), config.daemon.rpc_timeout)
    ca_file = config.cluster.pki_dir / "ca.crt"
    peer_file = config.cluster.pki_dir / PEER_CA_CERT
    book = StartBook(config.cluster.state_dir, log, history, readonly=readonly)
    observer = Observer(runtime, pool, config.cluster.state_dir,
                        config.apiserver.etcd_servers_file,
                        probe_timeout=min(config.daemon.rpc_timeout, 1.0), readonly=readonly,
                        ca_pem=ca_file.read_bytes() if ca_file.exists() else None,
                        peer_ca_pem=peer_file.read_bytes() if peer_file.exists() else None,
                        renew_before=config.tls.member_cert_renew_before, book=book,
                        pki_dir=config.cluster.pki_dir)
    return Env(config, runtime, pool, observer, log)


"""One cached client per endpoint, so a probe cycle costs RPCs, not handshakes."""

from __future__ import annotations

from ckeetcd.etcd.client import EtcdClient
from ckeetcd.pki import TLSFiles


class ClientPool:
    def __init__(self, tls: TLSFiles, timeout: float) -> None:
        self.tls = tls
        self.timeout = timeout
        self._clients: dict[str, EtcdClient] = {}

    def get(self, endpoint: str) -> EtcdClient:
        client = self._clients.get(endpoint)
        if client is None:
            client = self._clients[endpoint] = EtcdClient(endpoint, self.tls, self.timeout)
        return client

    async def reset(self) -> None:
        """Drop every channel (e.g. after the client certificate was renewed)."""
        clients, self._clients = self._clients, {}
        for c in clients.values():
            await c.close()

    async def close(self) -> None:
        await self.reset()

"""One cached client per endpoint, so a probe cycle costs RPCs, not handshakes."""

from __future__ import annotations

import asyncio
import time

from ckeetcd.etcd.client import EtcdClient
from ckeetcd.pki import TLSFiles

# A channel replaced by `rotate()` is closed this much later: closing it at once
# would cancel calls still running on it (a keepalive, a snapshot being streamed).
RETIRE_AFTER = 900.0


class ClientPool:
    def __init__(self, tls: TLSFiles, timeout: float) -> None:
        self.tls = tls
        self.timeout = timeout
        self._clients: dict[str, EtcdClient] = {}
        self._retired: list[tuple[float, EtcdClient]] = []
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, endpoint: str) -> EtcdClient:
        if self._retired:
            self._reap(time.monotonic())
        client = self._clients.get(endpoint)
        if client is None:
            client = self._clients[endpoint] = EtcdClient(endpoint, self.tls, self.timeout)
        return client

    def rotate(self) -> None:
        """New channels from now on (they read the renewed client certificate);
        calls already running on the old ones finish undisturbed."""
        now = time.monotonic()
        self._retired += [(now, c) for c in self._clients.values()]
        self._clients = {}

    def _reap(self, now: float) -> None:
        due = [c for t, c in self._retired if now - t >= RETIRE_AFTER]
        if not due:
            return
        self._retired = [(t, c) for t, c in self._retired if now - t < RETIRE_AFTER]
        for c in due:
            task = asyncio.get_running_loop().create_task(c.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def reset(self) -> None:
        """Close every channel now, retired ones too (at shutdown)."""
        clients = [*self._clients.values(), *(c for _, c in self._retired)]
        self._clients, self._retired = {}, []
        for c in clients:
            await c.close()

    async def close(self) -> None:
        await self.reset()

"""A writer that behaves as a kube-apiserver does: it follows the etcd servers file.

The daemon keeps `[apiserver] etcd_servers_file`; a kube-apiserver sends its
requests to the members listed there, and a member the daemon takes out of
the file (before it stops it) gets no more requests once the file is read
again. This writer does the same, with the soak workload's endpoints
(tests.soak.workload.Endpoints: the file re-read when it changes, stat every
POLL seconds; one kept TLS channel per member, as a real client keeps its
connections): one put at a time, keys numbered, round robin over the listed
members (clientv3's balancer picks per request), a failed attempt retried
with the same key on the next member until acknowledged.

Figures, as tests.harness.Writer gives them: `failures` (attempts that
failed), `max_outage` (the longest time one key took, first attempt to
acknowledgement), `acked`; `errors` names each failure (when, which member,
what etcd or gRPC said) so a stall can be placed against the daemon's steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from aetcd import rpc

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.harness import Cluster  # noqa: E402
from tests.soak.workload import ALL_FAILED_PAUSE, POLL, Endpoints, WorkloadSpec  # noqa: E402

DEADLINE = 2.0  # per attempt, as tests.harness.Writer's client
PAUSE = 0.01  # after an acknowledged put
PREFIX = b"/writer/"


def servers_file(cluster: Cluster) -> Path:
    """Where a bench cluster's daemon keeps the etcd servers file."""
    return cluster.root / "etcd-servers"


def apiserver_section(cluster: Cluster) -> str:
    """The config section that makes the daemon keep it."""
    return f'[apiserver]\netcd_servers_file = "{servers_file(cluster)}"\n'


class ServersFileWriter:
    def __init__(self, cluster: Cluster, servers_file: Path, follow_tls: bool = False) -> None:
        """`follow_tls`: keep the writer's own copy of the daemon's client credentials
        current (the CA bundle and the root certificate a client CA rotation hands
        out), as an operator hands a kube-apiserver the new files; without it the
        writer keeps the credentials it started with."""
        self.cluster = cluster
        self.servers_file = servers_file
        self.follow_tls = follow_tls
        self.tls_dir = servers_file.parent / "writer-tls"
        self.acked: list[bytes] = []
        self.failures = 0
        self.max_outage = 0.0
        self.max_outage_at = 0.0  # time.monotonic() its key was first tried
        self.errors: list[dict[str, Any]] = []
        self.switches: list[tuple[float, list[str]]] = []  # (when, the file's members)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> ServersFileWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _spec(self) -> WorkloadSpec:
        tls = self.cluster.root_tls()
        if self.follow_tls:
            self._copy_tls()
            d = self.tls_dir
            return WorkloadSpec(servers_file=str(self.servers_file), ca=str(d / "ca.crt"),
                                cert=str(d / "root.crt"), key=str(d / "root.key"),
                                prefix=PREFIX.decode(), history="", run_id="bench")
        return WorkloadSpec(servers_file=str(self.servers_file), ca=str(tls.ca),
                            cert=str(tls.cert), key=str(tls.key), prefix=PREFIX.decode(),
                            history="", run_id="bench")

    def _copy_tls(self) -> None:
        """Copy the daemon's current client files when they differ from the copy: the
        CA and the key first, the certificate last, each by a rename (the workload's
        Endpoints re-read all three when the certificate file is replaced)."""
        tls = self.cluster.root_tls()
        self.tls_dir.mkdir(mode=0o700, exist_ok=True)
        pairs = [(tls.ca, "ca.crt"), (tls.key, "root.key"), (tls.cert, "root.crt")]
        try:
            wanted = [(src.read_bytes(), name) for src, name in pairs]
        except OSError:
            return  # mid-swap: the next poll copies them
        if all((self.tls_dir / name).exists() and (self.tls_dir / name).read_bytes() == data
               for data, name in wanted):
            return
        for data, name in wanted:
            tmp = self.tls_dir / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.chmod(0o600)
            tmp.replace(self.tls_dir / name)

    async def _follow(self, eps: Endpoints) -> None:
        seen = -1
        while not self._stop.is_set():
            if self.follow_tls:
                self._copy_tls()
            eps.refresh()
            if eps.changes != seen:
                seen = eps.changes
                self.switches.append((time.monotonic(), list(eps.urls)))
            await asyncio.sleep(POLL)

    async def _run(self) -> None:
        eps = Endpoints(self._spec())
        follow = asyncio.create_task(self._follow(eps))
        try:
            i = 0
            while not self._stop.is_set():
                if not eps.urls:
                    await asyncio.sleep(POLL)
                    continue
                key = PREFIX + f"{i:06d}".encode()
                start = time.monotonic()
                in_row = 0
                while not self._stop.is_set():
                    urls = eps.urls
                    url = urls[(i + self.failures) % len(urls)]
                    at = time.monotonic()
                    try:
                        await eps.kv(url).Put(rpc.PutRequest(key=key, value=b"v"),
                                              timeout=DEADLINE)
                    except grpc.aio.AioRpcError as e:
                        self.failures += 1
                        self.errors.append({"at": at, "took": round(time.monotonic() - at, 4),
                                            "endpoint": url, "code": e.code().name,
                                            "details": (e.details() or "")[:200]})
                        in_row += 1
                        if in_row % len(urls) == 0:  # every member failed: pace, don't spin
                            await asyncio.sleep(ALL_FAILED_PAUSE)
                        continue
                    self.acked.append(key)
                    break
                took = time.monotonic() - start
                if took > self.max_outage:
                    self.max_outage, self.max_outage_at = took, start
                i += 1
                await asyncio.sleep(PAUSE)
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
            await eps.close()

    def lost(self, name: str) -> list[bytes]:
        """Acknowledged keys that a read through `name` no longer finds."""

        async def read() -> set[bytes]:
            async with self.cluster.client(name) as c:
                return {kv.key for kv in await c.get_prefix(PREFIX)}

        present = asyncio.run(read())
        return [k for k in self.acked if k not in present]

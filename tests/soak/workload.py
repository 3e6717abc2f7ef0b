"""The soak's clients, in their own process: writers and readers, as a kube-apiserver.

Independent of the daemon's code: plain grpc.aio secure channels with the
etcd stubs aetcd ships (`aetcd.rpc`), one channel per endpoint (a
multi-address channel would check every member's certificate against one
name), and a client certificate of a `[[users]]` user confined to its prefix.

- Endpoints come from the etcd servers file the daemon keeps; it is re-read
  when it changes (stat every POLL seconds).
- Writers put unique keys with unique values, one operation at a time; a
  failed or indeterminate put moves the writer to the next endpoint, and the
  next put uses a new key (an indeterminate key is never written again).
- Readers count the keys under the prefix (a linearizable Range with
  count_only) and record the revision they saw.
- Every operation is appended to the history file (JSON lines, flushed every
  POLL seconds). SIGTERM stops the clients after their current operation.

Run: python -m tests.soak.workload SPEC.json (written by `WorkloadSpec.write`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import grpc
from aetcd import rpc

from tests.soak.history import OK, OpRecord, classify

POLL = 0.05  # servers file stat, history flush
ALL_FAILED_PAUSE = 0.02  # after every endpoint failed in a row: pace, don't spin
Operation = Callable[[str, str, int], Awaitable[OpRecord]]  # (client, url, seq)


@dataclass(frozen=True)
class WorkloadSpec:
    servers_file: str
    ca: str
    cert: str
    key: str
    prefix: str
    history: str
    run_id: str
    writers: int = 4
    readers: int = 2
    deadline: float = 0.5       # per request; well under etcd's election timeout x 1.5
    write_interval: float = 0.02  # pause after an acknowledged put, per writer
    read_interval: float = 0.05

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self)))
        return path

    @staticmethod
    def read(path: Path) -> WorkloadSpec:
        return WorkloadSpec(**json.loads(path.read_text()))


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix`."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def grpc_target(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"[{host}]:{parts.port}" if ":" in host else f"{host}:{parts.port}"


def parse_servers(text: str) -> list[str]:
    """The servers file: comma-separated client URLs (blank: none)."""
    return [u.strip() for u in text.replace("\n", ",").split(",") if u.strip()]


class Endpoints:
    """The endpoints of the servers file, and one secure channel per endpoint. The
    credentials are read again when the certificate file is replaced (a client handed
    a new certificate and CA bundle mid-run, as in a client CA rotation: write the CA
    and the key first, the certificate last, each by a rename); new channels use them."""

    def __init__(self, spec: WorkloadSpec) -> None:
        self.path = Path(spec.servers_file)
        self.spec = spec
        self._cert_stamp = _stamp(Path(spec.cert))
        self._creds = self._read_creds()
        self._stamp: tuple[int, int, int] | None = None
        self.urls: list[str] = []
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._retired: list[grpc.aio.Channel] = []
        self.changes = 0

    def _read_creds(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.spec.ca).read_bytes(),
            private_key=Path(self.spec.key).read_bytes(),
            certificate_chain=Path(self.spec.cert).read_bytes())

    def _refresh_creds(self) -> None:
        stamp = _stamp(Path(self.spec.cert))
        if stamp is None or stamp == self._cert_stamp:
            return
        try:
            self._creds = self._read_creds()
        except OSError:
            return
        self._cert_stamp = stamp
        self._retired += self._channels.values()  # calls on them finish undisturbed
        self._channels = {}

    def refresh(self) -> None:
        self._refresh_creds()
        try:
            st = self.path.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            urls = parse_servers(self.path.read_text())
        except OSError:
            return
        self._stamp = stamp
        if urls and urls != self.urls:
            self.urls = urls
            self.changes += 1

    def kv(self, url: str) -> rpc.KVStub:
        channel = self._channels.get(url)
        if channel is None:
            channel = self._channels[url] = grpc.aio.secure_channel(
                grpc_target(url), self._creds, options=[
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 500),
                ])
        return rpc.KVStub(channel)

    async def close(self) -> None:
        for channel in [*self._retired, *self._channels.values()]:
            await channel.close()


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class Workload:
    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self.endpoints = Endpoints(spec)
        self.prefix = spec.prefix.encode()
        self.stop = asyncio.Event()
        self._pending: list[OpRecord] = []

    def record(self, r: OpRecord) -> None:
        self._pending.append(r)

    def flush(self, out: TextIO) -> None:
        if self._pending:
            lines = "".join(r.to_json() + "\n" for r in self._pending)
            self._pending.clear()
            out.write(lines)
            out.flush()

    async def _call(self, client: str, kind: str, url: str, method: str, request: object,
                    key: str = "", value: str = "") -> OpRecord:
        start = time.monotonic()
        try:
            resp = await getattr(self.endpoints.kv(url), method)(request,
                                                                 timeout=self.spec.deadline)
        except grpc.aio.AioRpcError as e:
            code, details = e.code().name, e.details() or ""
            r = OpRecord(client, kind, start, time.monotonic(), classify(code, details), url,
                         key, value, error=f"{code}: {details}"[:300])
        else:
            r = OpRecord(client, kind, start, time.monotonic(), OK, url, key, value,
                         revision=int(resp.header.revision),
                         count=int(resp.count) if kind == "read" else -1)
        self.record(r)
        return r

    async def _client(self, name: str, index: int, interval: float, op: Operation) -> None:
        """One client, one operation at a time.

        It starts on endpoint `index` of the list (so the clients are spread over
        the members), stays on an endpoint while it answers, moves to the next
        one after a failure, and starts again from `index` whenever the servers
        file changes (as a fleet of kube-apiservers, each pinned to one member).
        """
        position, seen, failed_in_row, seq = index, -1, 0, 0
        while not self.stop.is_set():
            urls = self.endpoints.urls
            if not urls:
                await asyncio.sleep(POLL)
                continue
            if seen != self.endpoints.changes:
                position, seen = index, self.endpoints.changes
            r = await op(name, urls[position % len(urls)], seq)
            seq += 1
            if r.outcome == OK:
                failed_in_row = 0
                await asyncio.sleep(interval)
                continue
            position += 1
            failed_in_row += 1
            if failed_in_row >= len(urls):
                failed_in_row = 0
                await asyncio.sleep(ALL_FAILED_PAUSE)

    async def put(self, name: str, url: str, seq: int) -> OpRecord:
        key = f"{self.spec.prefix}{name}/{seq:08d}"
        value = f"{self.spec.run_id}:{name}:{seq}"
        req = rpc.PutRequest(key=key.encode(), value=value.encode())
        return await self._call(name, "put", url, "Put", req, key, value)

    async def read(self, name: str, url: str, seq: int) -> OpRecord:
        req = rpc.RangeRequest(key=self.prefix, range_end=prefix_end(self.prefix),
                               count_only=True)
        return await self._call(name, "read", url, "Range", req)

    async def _follow_file(self) -> None:
        while not self.stop.is_set():
            self.endpoints.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), POLL)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        self.endpoints.refresh()
        s = self.spec
        tasks = [asyncio.create_task(self._follow_file())]
        tasks += [asyncio.create_task(self._client(f"w{i}", i, s.write_interval, self.put))
                  for i in range(s.writers)]
        tasks += [asyncio.create_task(self._client(f"r{i}", i, s.read_interval, self.read))
                  for i in range(s.readers)]
        with open(s.history, "a") as out:
            while not self.stop.is_set():
                self.flush(out)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), POLL)
            await asyncio.gather(*tasks)  # each ends after its current operation
            self.flush(out)
        await self.endpoints.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.soak.workload SPEC.json", file=sys.stderr)
        return 2
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    asyncio.run(Workload(WorkloadSpec.read(Path(argv[1]))).run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))


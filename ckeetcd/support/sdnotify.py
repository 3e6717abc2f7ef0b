"""systemd's notify protocol without libsystemd: datagrams to $NOTIFY_SOCKET.

`Notifier.from_env()` takes NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID
out of the environment (as sd_notify's `unset_environment` does), so the etcd
members the daemon starts never talk to systemd in its name. Outside systemd
(no NOTIFY_SOCKET) every call is a no-op. An abstract socket is written with a
leading '@'. Sending never raises: a notification that cannot be delivered
is dropped (systemd acts on the missing READY or WATCHDOG by itself).

The daemon sends READY=1 after its first completed cycle, RELOADING=1 and
READY=1 around a config reload, STOPPING=1 on SIGTERM, STATUS= with the
phase, and WATCHDOG=1 from its control loop (`ping()`, at most every half of
WATCHDOG_USEC): a loop that hangs stops pinging, and systemd restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, MutableMapping


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._last_ping = -float("inf")
        self._status = ""

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", None) or None
        usec = env.pop("WATCHDOG_USEC", None)
        pid = env.pop("WATCHDOG_PID", None)
        watchdog: int | None = None
        try:
            if usec and (not pid or int(pid) == os.getpid()):
                watchdog = int(usec)
        except ValueError:
            watchdog = None
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def ping_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half the watchdog timeout (None: no watchdog)."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, *lines: str) -> bool:
        if not self.address or not lines:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(target)
                s.sendall("\n".join(lines).encode())
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        self._status = status or self._status
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> bool:
        """STATUS=text, only when it changed."""
        if text == self._status:
            return False
        self._status = text
        return self.send(f"STATUS={text}")

    def ping(self, force: bool = False) -> bool:
        """WATCHDOG=1 when half the watchdog timeout passed since the last one."""
        interval = self.ping_interval
        if interval is None:
            return False
        now = time.monotonic()
        if not force and now - self._last_ping < interval:
            return False
        self._last_ping = now
        return self.send("WATCHDOG=1")

    @contextlib.asynccontextmanager
    async def busy(self, budget: float) -> AsyncIterator[None]:
        """Keep pinging while the loop waits on ops, for at most `budget` seconds.

        Ops (a defragmentation, a snapshot) may legitimately take longer than
        the watchdog timeout; past `budget` they count as hung and the pings
        stop. A blocked event loop stops them at once.
        """
        interval = self.ping_interval
        if interval is None:
            yield
            return

        async def keepalive() -> None:
            deadline = time.monotonic() + budget
            while time.monotonic() < deadline:
                self.ping()
                await asyncio.sleep(interval / 2)

        task = asyncio.create_task(keepalive(), name="watchdog-keepalive")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

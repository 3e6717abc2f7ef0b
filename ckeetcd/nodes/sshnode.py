"""One SSH connection per node (asyncssh): strict host keys, key auth only, deadlines.

Connections: key authentication only (`[ssh] identity_file`; no agent, no
password, no ~/.ssh/config), the server's host key checked strictly against
`[ssh] known_hosts`, a connect timeout, a deadline on every command, and one
connection per host, reused by every call and re-opened when it broke. Each
failure is classified (`host-key`, `auth`, `unreachable`, `timeout`) and
logged once per change as `ssh_error` (and `ssh_connected` when it works
again); to the observer it is an `OSError`, i.e. an unreachable node.
"""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ckeetcd.core.config import SSHConfig

RECONNECT_BACKOFF = 1.0  # seconds a failed connect is answered from memory


class SSHError(OSError):
    """An SSH connection or command failed; `kind` says how."""

    def __init__(self, host: str, kind: str, message: str) -> None:
        self.host = host
        self.kind = kind  # host-key | auth | unreachable | timeout | command
        super().__init__(f"ssh {host}: {kind}: {message}")


@dataclass(frozen=True)
class Result:
    status: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")


class SSHNode:
    """One host: a lazily opened, reused connection and commands with deadlines."""

    def __init__(self, host: str, cfg: SSHConfig, log: Any = None) -> None:
        self.host = host
        self.cfg = cfg
        self.log = log
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._last_error = ""  # the kind logged last ("" = connected)
        self._error: SSHError | None = None
        self._retry_at = 0.0

    async def connect(self) -> None:
        """Open the connection now (bounded by `[ssh] connect_timeout`)."""
        await self._connect()

    async def _connect(self) -> Any:
        import asyncssh

        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            loop = asyncio.get_running_loop()
            if self._retry_at > loop.time() and self._error is not None:
                raise self._error  # failed a moment ago: don't stall every probe on it
            try:
                return await self._open(asyncssh)
            except SSHError as e:
                self._error, self._retry_at = e, loop.time() + RECONNECT_BACKOFF
                raise

    async def _open(self, asyncssh: Any) -> Any:
        cfg = self.cfg
        try:
            self._conn = await asyncio.wait_for(asyncssh.connect(
                self.host, port=cfg.port, username=cfg.user,
                client_keys=[str(cfg.identity_file)] if cfg.identity_file else None,
                known_hosts=str(cfg.known_hosts) if cfg.known_hosts else None,
                agent_path=None, config=[], password=None, kbdint_auth=False,
                preferred_auth="publickey", connect_timeout=cfg.connect_timeout,
                login_timeout=cfg.connect_timeout,
                keepalive_interval=max(cfg.connect_timeout, 1.0), keepalive_count_max=3,
            ), cfg.connect_timeout + 1)
        except asyncssh.HostKeyNotVerifiable as e:
            raise self._failed("host-key", f"host key not in {cfg.known_hosts} or "
                                           f"different: {e.reason}") from e
        except asyncssh.PermissionDenied as e:
            raise self._failed("auth", f"key {cfg.identity_file} refused for "
                                       f"{cfg.user}: {e.reason}") from e
        except asyncssh.DisconnectError as e:
            raise self._failed("unreachable", f"disconnected: {e.reason}") from e
        except (OSError, TimeoutError) as e:
            raise self._failed("unreachable", str(e) or type(e).__name__) from e
        if self._last_error and self.log is not None:
            self.log.info("ssh_connected", host=self.host, after=self._last_error)
        self._last_error = ""
        return self._conn

    def _failed(self, kind: str, message: str) -> SSHError:
        err = SSHError(self.host, kind, message)
        if kind != self._last_error and self.log is not None:
            self.log.warning("ssh_error", host=self.host, kind=kind, error=message)
        self._last_error = kind
        return err

    async def run(self, command: str, stdin: bytes | None = None,
                  timeout: float | None = None, check: bool = True) -> Result:
        """Run `command` (a POSIX sh command line) on the node."""
        import asyncssh

        conn = await self._connect()
        deadline = timeout or self.cfg.command_timeout
        try:
            r = await conn.run(command, input=stdin, encoding=None, check=False,
                               timeout=deadline)
        except asyncssh.TimeoutError as e:
            await self._drop()
            raise self._failed("timeout", f"no answer within {deadline:g}s to "
                                          f"{command.split()[0]}...") from e
        except (asyncssh.Error, OSError) as e:
            await self._drop()
            raise self._failed("unreachable", f"connection lost: {e}") from e
        except AssertionError as e:
            # asyncssh asserts that a channel still has its connection: one that closed
            # while the session was being opened (a loaded node) ends here. A lost
            # connection, not a crash of the daemon.
            await self._drop()
            raise self._failed("unreachable", "connection lost while opening a session") \
                from e
        except asyncio.CancelledError:
            # The caller's deadline passed (a probe): the connection may be
            # dead without knowing it yet; the next call connects afresh.
            await self._drop()
            raise
        result = Result(r.exit_status if r.exit_status is not None else -1,
                        bytes(r.stdout or b""), bytes(r.stderr or b""))
        if check and result.status != 0:
            tail = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise SSHError(self.host, "command", f"exit {result.status}: {tail[-500:]}")
        return result

    async def put(self, path: str, content: bytes, mode: int) -> None:
        """Write `content` to `path` atomically with `mode` (parent made 0700)."""
        q = shlex.quote(path)
        tmp = shlex.quote(f"{path}.tmp")
        parent = shlex.quote(str(PurePosixPath(path).parent))
        await self.run(f"umask 077 && mkdir -p {parent} && cat > {tmp} && "
                       f"chmod {mode:o} {tmp} && mv -f {tmp} {q}", stdin=content)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        await self._drop()

"""A real ckeetcd cluster for tests: own loopback addresses, own state dir.

Every cluster gets a fresh 127.X.Y.0/24 block, so tests never collide with
each other or with a local cluster on config/local.toml (127.0.1.x). Cleanup
stops only processes this harness started (daemon by Popen, members by their
pidfiles) and runs even when the test failed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ckeetcd.core.config import EtcdConfig, load_config
from ckeetcd.core.model import Desired, Observed
from ckeetcd.etcd import EtcdClient
from ckeetcd.loop.env import make_env
from ckeetcd.nodes import LocalRuntime, resolve_etcd_binary
from ckeetcd.pki import TLSFiles, load_ca
from ckeetcd.support.files import write_atomic, write_private
from ckeetcd.tasks.daemoncert import daemon_tls
from tests.etcd_tier import refuse_unless_allowed

T = TypeVar("T")
_blocks = itertools.count()


def _etcdctl() -> str:
    """The etcdctl of the etcd the tests run (a fetched Debian build), else the venv's."""
    beside = Path(resolve_etcd_binary("")).parent / "etcdctl"
    return str(beside) if beside.exists() else str(Path(sys.executable).parent / "etcdctl")


_ETCDCTL = _etcdctl()

# How a client sees the server refuse its certificate, across etcd (Go TLS)
# releases: TLS 1.2 alerts name the cause (3.5.1: "bad certificate"); newer
# servers send "handshake failure" / "unknown certificate authority", and with
# TLS 1.3 a refused client certificate can surface only as a reset after the
# handshake. Tests that need the cause read the member's own log as well.
TLS_REFUSALS = ("bad certificate", "certificate required", "handshake failure",
                "unknown certificate authority", "unknown authority", "certificate has expired",
                "expired certificate", "connection reset by peer")


def tls_refused(stderr: str) -> bool:
    """Whether a client's error output shows its TLS handshake refused."""
    return any(s in stderr for s in TLS_REFUSALS)


def ports_free(address: str) -> bool:
    """Whether etcd could listen on this address's client and peer ports."""
    for port in (2379, 2380):
        with socket.socket() as s:
            try:
                s.bind((address, port))
            except OSError:
                return False
    return True


def next_block() -> str:
    """A /24 of loopback addresses no running test uses (random, then checked)."""
    rng = random.Random(os.getpid() * 1000 + next(_blocks))
    while True:
        block = f"127.{rng.randint(100, 199)}.{rng.randint(1, 250)}"
        if all(ports_free(f"{block}.{h}") for h in range(1, 6)):
            return block


def terminate(p: subprocess.Popen[bytes] | None, grace: float) -> None:
    """End a process this test run started: SIGTERM (it may write its last records or
    stop its members), then SIGKILL if it has not gone within `grace` seconds."""
    if p is not None and p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1,
             abort: Callable[[], str | None] | None = None) -> T:
    """Poll `predicate` until it returns something truthy, or fail naming `what`.

    `abort` may return a reason to stop waiting at once (e.g. the daemon died).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        reason = abort() if abort else None
        if reason:
            raise AssertionError(f"gave up waiting for {what}: {reason}")
        try:
            last = predicate()
        except Exception as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def named(logs: Sequence[Mapping[str, Any]], event: str) -> list[Mapping[str, Any]]:
    """The entries of `event` among structlog.testing.capture_logs() entries."""
    return [e for e in logs if e["event"] == event]


def names(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The event names of capture_logs() entries, in order."""
    return [e["event"] for e in logs]


def wait_ok_ops(op_events: Callable[[], list[dict[str, Any]]], through: str,
                timeout: float = 20) -> list[str]:
    """The names of the ops that succeeded, once `through` is among them.

    An op's effect (a promoted member, a removed one) is visible to a test a
    moment before the daemon logs the op's "ok" event, so a test that saw the
    effect waits here for the record instead of racing it.
    """
    def logged() -> list[str]:
        ops = [e["op"] for e in op_events() if e["outcome"] == "ok"]
        return ops if through in ops else []
    return wait_for(logged, timeout, f"the {through} op logged as ok")


def read_events(log: Path, name: str | None = None, since: int = 0) -> list[dict[str, Any]]:
    """JSON log events of a daemon log from line `since` on (all, or those named `name`)."""
    if not log.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in log.read_text().splitlines()[since:]:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if name is None or e.get("event") == name:
            out.append(e)
    return out


class Cluster:
    def __init__(self, root: Path, names: list[str], extra: str = "",
                 probe_interval: float = 0.2) -> None:
        refuse_unless_allowed("a test Cluster")
        self.root = root
        self.probe_interval = probe_interval
        self.block = next_block()
        self.state_dir = root / "state"
        self.config_path = root / "ckeetcd.toml"
        self.addresses: dict[str, str] = {}
        self.extra = extra
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_log = root / "daemon.log"
        self._host = 0
        self.write_config(names)

    # ---- config --------------------------------------------------------------
    def address_of(self, name: str) -> str:
        if name not in self.addresses:
            self._host += 1
            self.addresses[name] = f"{self.block}.{self._host}"
        return self.addresses[name]

    def write_config(self, names: list[str], extra: str | None = None) -> None:
        if extra is not None:
            self.extra = extra
        lines = [
            "[cluster]",
            'name = "test"',
            f'state_dir = "{self.state_dir}"',
            "",
            "[daemon]",
            "interval = 2.0",
            f"probe_interval = {self.probe_interval}",
            "rpc_timeout = 1.0",
            "",
        ]
        for n in names:
            lines += ["[[members]]", f'name = "{n}"', f'address = "{self.address_of(n)}"', ""]
        text = "\n".join(lines) + "\n" + self.extra
        write_atomic(self.config_path, text.encode())

    @property
    def config(self) -> Any:
        return load_config(self.config_path)

    # ---- daemon --------------------------------------------------------------
    def cli(self, *args: str, check: bool = False, env: dict[str, str] | None = None,
            input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "ckeetcd.cli.main", *args]
        if "--config" not in args:
            cmd += ["--config", str(self.config_path)]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120,
                              env={**os.environ, **(env or {})}, input=input, cwd=cwd)

    def start_daemon(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        assert self.daemon is None or self.daemon.poll() is not None
        with open(self.daemon_log, "ab") as log:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "ckeetcd.cli.main", "run", "--config",
                 str(self.config_path), "--log-format", "json"],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            )
        return self.daemon

    def stop_daemon(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.daemon is None or self.daemon.poll() is not None:
            return self.daemon.returncode if self.daemon else None
        self.daemon.send_signal(sig)
        return self.daemon.wait(timeout)

    def mark(self) -> int:
        """A position in the daemon log; pass it to events(since=...)."""
        return len(self.daemon_log.read_text().splitlines()) if self.daemon_log.exists() else 0

    def events(self, name: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        return read_events(self.daemon_log, name, since)

    def ok_ops(self, since: int, through: str, timeout: float = 20) -> list[str]:
        """The ops that succeeded since `since`, once `through` is among them."""
        return wait_ok_ops(lambda: self.events("op", since=since), through, timeout)

    # ---- observing -----------------------------------------------------------
    def observe(self) -> tuple[Desired, Observed]:
        config = self.config

        async def go() -> tuple[Desired, Observed]:
            env = make_env(config, readonly=True)
            try:
                desired = Desired.from_config(config)
                return desired, await env.observer.observe(desired)
            finally:
                await env.close()

        return asyncio.run(go())

    def healthy_names(self) -> set[str]:
        _, obs = self.observe()
        return {m.name for m in obs.members or () if obs.is_healthy(m) and not m.learner}

    def wait_healthy(self, names: list[str], timeout: float = 60) -> None:
        want = set(names)

        def check() -> bool:
            _, obs = self.observe()
            voters = {m.name for m in obs.members or () if not m.learner}
            return voters == want and self.healthy_names() == want and bool(obs.rbac_ready)

        wait_for(check, timeout, f"voters {sorted(want)} healthy with RBAC",
                 abort=self.daemon_died)

    def daemon_died(self) -> str | None:
        """Why waiting on the daemon is pointless: it exited (with its log tail)."""
        if self.daemon is None or self.daemon.poll() is None:
            return None
        tail = self.daemon_log.read_text()[-2000:] if self.daemon_log.exists() else ""
        return f"daemon exited with {self.daemon.returncode}; log tail:\n{tail}"

    def member_pid(self, name: str) -> int | None:
        rt = LocalRuntime(self.state_dir, self.config.etcd)
        return asyncio.run(rt.inspect(name)).pid

    def data_dir(self, name: str) -> Path:
        return self.state_dir / "members" / name / "data"

    # ---- clients -------------------------------------------------------------
    def client_cert(self, user: str, ttl_hours: float = 1.0) -> TLSFiles:
        """A client certificate for `user` signed by the cluster CA, in the test dir."""
        import datetime as dt

        ca = load_ca(self.state_dir / "pki")
        pair = ca.issue(user, dt.timedelta(hours=ttl_hours))
        d = self.root / "certs"
        d.mkdir(exist_ok=True)
        write_atomic(d / f"{user}.crt", pair.cert_pem)
        write_private(d / f"{user}.key", pair.key_pem)
        return TLSFiles(ca=self.state_dir / "pki" / "ca.crt", cert=d / f"{user}.crt",
                        key=d / f"{user}.key")

    def root_tls(self) -> TLSFiles:
        return daemon_tls(self.config)

    def client_url(self, name: str) -> str:
        return f"https://{self.address_of(name)}:2379"

    def endpoints(self, names: list[str]) -> str:
        return ",".join(self.client_url(n) for n in names)

    def etcdctl(self, *args: str, tls: TLSFiles | None = None, endpoints: str = "",
                timeout: float = 30) -> subprocess.CompletedProcess[str]:
        tls = tls or self.root_tls()
        cmd = [_ETCDCTL, f"--endpoints={endpoints or self.endpoints(list(self.live_names()))}",
               f"--cacert={tls.ca}", f"--cert={tls.cert}", f"--key={tls.key}",
               "--dial-timeout=3s", "--command-timeout=5s", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "ETCDCTL_API": "3"})

    def live_names(self) -> list[str]:
        return [m.name for m in self.config.members]

    def client(self, name: str, tls: TLSFiles | None = None, timeout: float = 3.0,
               ) -> EtcdClient:
        return EtcdClient(self.client_url(name), tls or self.root_tls(), timeout=timeout)

    # ---- cleanup -------------------------------------------------------------
    def cleanup(self) -> None:
        self.stop_daemon(signal.SIGKILL) if self.daemon and self.daemon.poll() is None else None
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.wait(10)
        members = self.state_dir / "members"
        if not members.exists():
            return
        # not from the config file: a failed test may have left it invalid
        rt = LocalRuntime(self.state_dir, EtcdConfig())

        async def stop_all() -> None:
            for d in members.iterdir():
                if d.is_dir():
                    await rt.stop(d.name, timeout=5)

        asyncio.run(stop_all())


class Writer:
    """Keeps writing numbered keys through a scenario; remembers every acknowledged one.

    Runs in its own thread with its own event loop; each put retries (with a
    fresh endpoint from `endpoints()`) until acknowledged or `stop()`.
    """

    def __init__(self, cluster: Cluster, endpoints: Callable[[], list[str]]) -> None:
        import threading

        self.cluster = cluster
        self.endpoints = endpoints
        self.acked: list[bytes] = []
        self.read_misses: list[bytes] = []  # acknowledged, then not read back
        self.failures = 0
        self.max_outage = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        from ckeetcd.etcd import EtcdError

        i = 0
        while not self._stop.is_set():
            key = f"/writer/{i:06d}".encode()
            start = time.monotonic()
            while not self._stop.is_set():
                tls = self.cluster.root_tls()  # a client CA rotation's bundle once in force
                names = self.endpoints()
                name = names[(i + self.failures) % len(names)]
                client = EtcdClient(self.cluster.client_url(name), tls, timeout=2.0)
                try:
                    await client.put(key, b"v")
                    self.acked.append(key)
                    got = await client.get(key)
                    if got is None:
                        self.read_misses.append(key)
                    break
                except EtcdError:
                    self.failures += 1
                    await asyncio.sleep(0.05)
                finally:
                    await client.close()
            self.max_outage = max(self.max_outage, time.monotonic() - start)
            i += 1
            await asyncio.sleep(0.01)

    def lost(self, name: str) -> list[bytes]:
        """Acknowledged keys that a read through `name` no longer finds."""

        async def read() -> set[bytes]:
            async with self.cluster.client(name) as c:
                return {kv.key for kv in await c.get_prefix(b"/writer/")}

        present = asyncio.run(read())
        return [k for k in self.acked if k not in present]


def running_cluster(root: Path, names: tuple[str, ...] = ("m1", "m2", "m3")) -> Iterator[Cluster]:
    """A bootstrapped cluster for a module-scoped fixture (`yield from` it)."""
    c = Cluster(root, list(names))
    try:
        c.start_daemon()
        c.wait_healthy(list(names))
        yield c
    finally:
        c.cleanup()


BIN = Path(sys.executable).parent


def cli_env(config: Path) -> dict[str, str]:
    """What an operator's shell has: our venv on PATH, the config in $CKEETCD_CONFIG."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["CKEETCD_CONFIG"] = str(config)
    return env


def ckecli(config: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`ckecli etcd ARGS` as an operator runs it."""
    return subprocess.run([str(BIN / "ckecli"), "etcd", *args], capture_output=True, text=True,
                          env=cli_env(config), cwd=cwd, timeout=60)

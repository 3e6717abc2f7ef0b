"""Hosts in network namespaces, each with its own sshd, on a subnet only they can see.

Layout of one lab (all names carry a per-run tag, so parallel runs never meet):

    ckt-<pid>-<n>-br   a namespace holding the bridge `br0`
    ckt-<pid>-<n>-h1   a host: `lo`, `eth0` (a veth whose peer `vh1` is on br0)
    ...                10.213.<x>.11, .12, ... /24, no default route

The subnet exists only inside these namespaces: the veth pairs are made
directly between the bridge namespace and each host namespace, nothing is
added to the namespace the tests run in, and there is no route out.

Each host runs `sshd` in its namespace with a private /run (a mount
namespace of its own, so it neither needs nor touches the machine's
/run/sshd) and an empty home for root (the machine's shell start-up files
never run in a session), a host key made for this lab, and the lab's client
key as its only authorized key. Commands run on a host with `exec()` / `popen()`.

A host named in `systemd=` is a node with its own init: a real systemd
(tests/systemdlab.py, with all of that lab's care) booted inside the host's
network namespace, and its sshd a unit of that systemd, so what an SSH
session runs (`systemctl start ...`) is what an operator's node would run.
Such a host sees the test's folder for it read-only at /run/lab-share and
has a tmpfs on /etc (a copy), /var/lib, /tmp, ...: its files are its own.

`cleanup()` kills every process that lives in one of the lab's namespaces
(`ip netns pids`: only processes we started, or children of them) and
deletes the namespaces; it runs even when the test failed, and `sweep()`
removes what a killed test run left behind (tag of a dead pid).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.slowlink import PingResult, Shape, heal_commands, parse_ping, slow_commands
from tests.systemdlab import SHARE, SystemdLab

SSHD = "/usr/sbin/sshd"
PREFIX = "ckt-"
_labs = itertools.count()


def available() -> str | None:
    """Why labs cannot run here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not Path(SSHD).exists():
        return f"{SSHD} missing (apt-get install openssh-server)"
    for tool in ("ip", "unshare", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} missing"
    return None


def _run(*cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)


def _namespaces() -> list[str]:
    out = _run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_namespace(ns: str) -> None:
    """SIGKILL every process in `ns`, wait for them, delete the namespace."""
    for _ in range(50):
        pids = [int(p) for p in _run("ip", "netns", "pids", ns, check=False).stdout.split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    _run("ip", "netns", "del", ns, check=False)


def sweep() -> None:
    """Delete labs left by test runs whose process is gone (e.g. killed pytest)."""
    for ns in _namespaces():
        if not ns.startswith(PREFIX):
            continue
        try:
            pid = int(ns.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            _kill_namespace(ns)


@dataclass
class Host:
    name: str
    ns: str
    address: str
    sshd: subprocess.Popen[bytes] | None = None
    host_key: Path = field(default_factory=Path)
    systemd: SystemdLab | None = None  # the host's own init (hosts named in `systemd=`)


class Lab:
    """Several hosts on a private bridge, each with sshd; see the module docstring."""

    def __init__(self, root: Path, hosts: int = 5, systemd: tuple[str, ...] = ()) -> None:
        n = next(_labs)
        self.root = root
        self.systemd = systemd
        self.tag = f"{PREFIX}{os.getpid()}-{n}"
        self.subnet = f"10.213.{(os.getpid() + n) % 200 + 20}"
        self.bridge_ns = f"{self.tag}-br"
        self.hosts = {
            f"h{i}": Host(f"h{i}", f"{self.tag}-h{i}", f"{self.subnet}.{10 + i}")
            for i in range(1, hosts + 1)
        }
        self.identity = root / "ssh" / "id_ed25519"
        self.known_hosts = root / "ssh" / "known_hosts"
        self._created: list[str] = []

    # ---- set-up ----------------------------------------------------------------
    def start(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _build(self) -> None:
        ssh_dir = self.root / "ssh"
        ssh_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ckeetcd-test",
             "-f", str(self.identity))
        self._add_ns(self.bridge_ns)
        _run("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        known = []
        for h in self.hosts.values():
            self._add_ns(h.ns)
            veth = f"v{h.name}"
            _run("ip", "-n", self.bridge_ns, "link", "add", veth, "type", "veth",
                 "peer", "name", "eth0", "netns", h.ns)
            _run("ip", "-n", self.bridge_ns, "link", "set", veth, "master", "br0", "up")
            _run("ip", "-n", h.ns, "addr", "add", f"{h.address}/24", "dev", "eth0")
            _run("ip", "-n", h.ns, "link", "set", "eth0", "up")
            _run("ip", "-n", h.ns, "link", "set", "lo", "up")
            known.append(f"{h.address} {self._start_sshd(h)}")
        self.known_hosts.write_text("\n".join(known) + "\n")
        for h in self.hosts.values():
            self._wait_sshd(h)

    def _add_ns(self, ns: str) -> None:
        _run("ip", "netns", "add", ns)
        self._created.append(ns)

    def host_dir(self, host: str) -> Path:
        d = self.root / "hosts" / host
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _start_sshd(self, h: Host) -> str:
        """Start sshd on `h`; returns its public host key ("type base64")."""
        d = self.host_dir(h.name)
        h.host_key = d / "ssh_host_ed25519_key"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(h.host_key))
        authorized = d / "authorized_keys"
        authorized.write_text(self.identity.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        # A clean home for the login user, as on a fresh node: the machine's
        # own shell start-up files (pyenv, ...) may be slow or hang.
        home = d / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        # On a systemd host the folder is seen at SHARE, and /root is already empty.
        seen = Path(SHARE) if h.name in self.systemd else d
        config = d / "sshd_config"
        config.write_text("\n".join([
            "Port 22",
            f"ListenAddress {h.address}",
            f"HostKey {seen / h.host_key.name}",
            f"AuthorizedKeysFile {seen / authorized.name}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "MaxStartups 100",
            "MaxSessions 100",
            "PidFile /run/sshd.pid",
            "LogLevel VERBOSE",
        ]) + "\n")
        pub = h.host_key.with_suffix(".pub").read_text().split()
        if h.name in self.systemd:
            self._start_systemd_sshd(h, seen / config.name)
            return f"{pub[0]} {pub[1]}"
        log = open(d / "sshd.log", "ab")  # noqa: SIM115 - handed to the child
        # `ip netns exec` and `unshare` exec: the Popen PID is sshd's own.
        h.sshd = subprocess.Popen(
            ["ip", "netns", "exec", h.ns, "unshare", "--mount", "--propagation", "private",
             "sh", "-c", f"mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/sshd "
                         f"&& mount --bind {home} {pwd.getpwuid(0).pw_dir} "
                         f"&& exec {SSHD} -D -e -f {config}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        return f"{pub[0]} {pub[1]}"

    def _start_systemd_sshd(self, h: Host, config: Path) -> None:
        """Boot the host's systemd in its namespace; sshd runs as its unit `lab-sshd`
        (log: /var/log/sshd.log of the host), journald runs for the units' output."""
        h.systemd = SystemdLab(self.host_dir(h.name), netns=h.ns)
        h.systemd.start()
        h.systemd.journald()
        h.systemd.write("/etc/systemd/system/lab-sshd.service", "\n".join([
            "[Unit]", f"Description=sshd of lab host {h.name}", "[Service]",
            "ExecStartPre=/bin/mkdir -p /run/sshd",
            f"ExecStart={SSHD} -D -E /var/log/sshd.log -f {config}", ""]))
        h.systemd.systemctl("daemon-reload")
        h.systemd.systemctl("start", "lab-sshd.service")

    def _wait_sshd(self, h: Host, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Server listening" in self.sshd_log(h.name):
                return
            if h.sshd is not None and h.sshd.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"sshd on {h.name} did not start: {self.sshd_log(h.name)[-1000:]}")

    # ---- using hosts -------------------------------------------------------------
    def host(self, name: str) -> Host:
        return self.hosts[name]

    def exec(self, host: str, *cmd: str, timeout: float = 60,
             env: dict[str, str] | None = None, input: str | None = None,
             ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` on `host` (in its network namespace) and wait for it."""
        return subprocess.run(["ip", "netns", "exec", self.hosts[host].ns, *cmd],
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})}, input=input)

    def popen(self, host: str, cmd: list[str], log: Path,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `cmd` on `host` in the background (its PID is the command's own)."""
        with open(log, "ab") as f:
            return subprocess.Popen(["ip", "netns", "exec", self.hosts[host].ns, *cmd],
                                    stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})})

    def link(self, host: str, up: bool) -> None:
        """Cut `host` off the network (`ip link set eth0 down`) or bring it back."""
        _run("ip", "-n", self.hosts[host].ns, "link", "set", "eth0", "up" if up else "down")

    def slow(self, host: str, shape: Shape) -> None:
        """Make `host`'s link slow and lossy both ways (tests/slowlink.py), on the bridge's
        side of its veth; `heal()` undoes it (so does cleanup(): it goes with the namespace)."""
        for cmd in slow_commands(f"v{host}", f"ifb-{host}", shape):
            _run("ip", "netns", "exec", self.bridge_ns, *cmd)

    def heal(self, host: str) -> None:
        for cmd in heal_commands(f"v{host}", f"ifb-{host}"):
            _run("ip", "netns", "exec", self.bridge_ns, *cmd)

    def ping(self, src: str, dst: str, count: int, interval: float = 0.2) -> PingResult:
        """`ping -c COUNT` from host `src` to host `dst`: round trip and loss."""
        r = self.exec(src, "ping", "-q", "-n", "-c", str(count), "-i", str(interval), "-W", "2",
                      self.hosts[dst].address, timeout=count * interval + 30)
        return parse_ping(r.stdout + r.stderr)

    def sshd_log(self, host: str) -> str:
        box = self.hosts[host].systemd
        if box is not None:
            return box.run("cat", "/var/log/sshd.log", check=False).stdout
        log = self.host_dir(host) / "sshd.log"
        return log.read_text(errors="replace") if log.exists() else ""

    # ---- tear-down ---------------------------------------------------------------
    def cleanup(self) -> None:
        """Kill everything in our namespaces (sshd, etcd, daemons), delete them."""
        for h in self.hosts.values():
            if h.sshd is not None and h.sshd.poll() is None:
                h.sshd.kill()
            if h.systemd is not None:
                h.systemd.close()
        for ns in reversed(self._created):
            _kill_namespace(ns)
        for h in self.hosts.values():
            if h.sshd is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    h.sshd.wait(5)
        self._created.clear()

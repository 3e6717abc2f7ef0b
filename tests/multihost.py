"""A ckeetcd cluster across the hosts of a namespace lab (tests/netns.py).

Members are named after the host they live on (`h1` lives on host h1) and
are reached only over SSH. Each daemon runs on its own host, in that host's
network namespace, with its own config file and state dir (the namespaces
share one filesystem, real nodes would not); the configs differ only in
`[cluster] state_dir`, `[daemon] id` and the etcd servers file path.

Everything the test process wants to know comes from inside the lab too:
`status()` runs `ckeetcd status --output json` on a host, `etcdctl()` runs
etcdctl there. Cleanup is the lab's: every process in its namespaces dies.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ckeetcd.nodes import resolve_etcd_binary
from ckeetcd.support.files import write_atomic
from tests.harness import read_events, wait_for
from tests.netns import Lab

PY = sys.executable
ETCDCTL = str(Path(PY).parent / "etcdctl")


class MultiCluster:
    def __init__(self, lab: Lab, root: Path, members: list[str], daemons: list[str],
                 extra: str = "", daemon_extra: str = "", ssh_extra: str = "",
                 data_root: str = "", etcd_binary: str = "") -> None:
        self.lab = lab
        self.etcd_binary = etcd_binary or resolve_etcd_binary("")  # [ssh] etcd_binary
        self.root = root
        self.daemon_hosts = daemons
        self.extra = extra
        self.daemon_extra = daemon_extra
        self.ssh_extra = ssh_extra  # more [ssh] keys (e.g. member_service)
        self.members = list(members)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # "" = a folder of the test (the hosts share the file system); a node with its
        # own systemd (tests/netns.py) needs a place of its own, e.g. under /var/lib
        self.data_root = Path(data_root) if data_root else root / "nodes"
        for h in daemons:
            self.dir(h).mkdir(parents=True, exist_ok=True)
        self.write_config(members)

    # ---- config ------------------------------------------------------------------
    def dir(self, daemon: str) -> Path:
        return self.root / "daemons" / daemon

    def config_path(self, daemon: str) -> Path:
        return self.dir(daemon) / "ckeetcd.toml"

    def state_dir(self, daemon: str) -> Path:
        return self.dir(daemon) / "state"

    def servers_file(self, daemon: str) -> Path:
        return self.dir(daemon) / "etcd-servers"

    def config_text(self, daemon: str, members: list[str]) -> str:
        lines = [
            "[cluster]", 'name = "multi"', f'state_dir = "{self.state_dir(daemon)}"',
            'runtime = "ssh"', "",
            "[daemon]", f'id = "{daemon}"', "interval = 2.0", "probe_interval = 0.2",
            "rpc_timeout = 1.0", "lease_ttl = 3", self.daemon_extra, "",
            "[ssh]", f'identity_file = "{self.lab.identity}"',
            f'known_hosts = "{self.lab.known_hosts}"', "connect_timeout = 2.0",
            "command_timeout = 15.0", f'etcd_binary = "{self.etcd_binary}"',
            f'data_root = "{self.data_root}"', self.ssh_extra, "",
            "[apiserver]", f'etcd_servers_file = "{self.servers_file(daemon)}"', "",
        ]
        for m in members:
            lines += ["[[members]]", f'name = "{m}"',
                      f'address = "{self.lab.host(m).address}"', ""]
        return "\n".join(lines) + "\n" + self.extra

    def write_config(self, members: list[str], only: list[str] | None = None) -> None:
        self.members = list(members)
        for d in only or self.daemon_hosts:
            write_atomic(self.config_path(d), self.config_text(d, members).encode())

    # ---- daemons -----------------------------------------------------------------
    def log_path(self, daemon: str) -> Path:
        return self.dir(daemon) / "daemon.log"

    def start_daemon(self, daemon: str, env: dict[str, str] | None = None) -> None:
        p = self.procs.get(daemon)
        assert p is None or p.poll() is not None, f"daemon on {daemon} still runs"
        self.procs[daemon] = self.lab.popen(
            daemon, [PY, "-m", "ckeetcd.cli.main", "run", "--config",
                     str(self.config_path(daemon)), "--log-format", "json"],
            self.log_path(daemon), env=env)

    def start_daemons(self) -> None:
        for d in self.daemon_hosts:
            self.start_daemon(d)

    def kill_daemon(self, daemon: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs[daemon]
        p.send_signal(sig)
        p.wait(20)

    def alive(self, daemon: str) -> bool:
        p = self.procs.get(daemon)
        return p is not None and p.poll() is None

    def mark(self, daemon: str) -> int:
        log = self.log_path(daemon)
        return len(log.read_text().splitlines()) if log.exists() else 0

    def marks(self) -> dict[str, int]:
        return {d: self.mark(d) for d in self.daemon_hosts}

    def events(self, daemon: str, name: str | None = None, since: int = 0,
               ) -> list[dict[str, Any]]:
        return read_events(self.log_path(daemon), name, since)

    def all_events(self, name: str, since: dict[str, int] | None = None,
                   ) -> list[tuple[str, dict[str, Any]]]:
        return [(d, e) for d in self.daemon_hosts
                for e in self.events(d, name, (since or {}).get(d, 0))]

    def died(self) -> str | None:
        dead = [d for d in self.procs if not self.alive(d) and self.procs[d].returncode != -9]
        if not dead:
            return None
        d = dead[0]
        return f"daemon {d} exited {self.procs[d].returncode}: " \
               f"{self.log_path(d).read_text()[-2000:]}"

    def history(self, daemon: str) -> list[dict[str, Any]]:
        out = []
        path = self.state_dir(daemon) / "history.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def cli(self, host: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`ckeetcd ARGS --config <host's config>` run on `host`."""
        return self.lab.exec(host, PY, "-m", "ckeetcd.cli.main", *args, "--config",
                             str(self.config_path(host)), "--log-format", "json", timeout=60)

    def share_ca(self, without_key: tuple[str, ...] = ()) -> None:
        """`ca export` on the first daemon host, `ca import` on the others."""
        first = self.daemon_hosts[0]
        for d in self.daemon_hosts[1:]:
            bundle = self.root / f"ca-for-{d}.json"
            extra = ("--no-key",) if d in without_key else ()
            r = self.cli(first, "ca", "export", "--out", str(bundle), *extra)
            assert r.returncode == 0, r.stderr
            r = self.cli(d, "ca", "import", str(bundle))
            assert r.returncode == 0, r.stderr

    def leader(self) -> str | None:
        """The daemon whose last role event says leader (None when none does)."""
        leaders = [d for d in self.daemon_hosts if self.alive(d)
                   and [e["role"] for e in self.events(d, "role_changed")][-1:] == ["leader"]]
        assert len(leaders) <= 1, f"several daemons think they lead: {leaders}"
        return leaders[0] if leaders else None

    # ---- looking at the cluster (from inside the lab) ------------------------------
    def status(self, host: str | None = None) -> dict[str, Any]:
        host = host or self.daemon_hosts[0]
        r = self.lab.exec(host, PY, "-m", "ckeetcd.cli.main", "status", "--output", "json",
                          "--config", str(self.config_path(host)), "--log-format", "json",
                          timeout=60)
        assert r.returncode == 0, r.stderr[-2000:]
        out: dict[str, Any] = json.loads(r.stdout)
        return out

    def voters(self, host: str | None = None) -> set[str]:
        st = self.status(host)
        return {m["name"] for m in st["members"]
                if m["in_cluster"] and m["healthy"] and not m["learner"]}

    def wait_healthy(self, names: list[str], timeout: float = 90, host: str | None = None,
                     ) -> None:
        want = set(names)

        def check() -> bool:
            st = self.status(host)
            live = {m["name"] for m in st["members"] if m["in_cluster"]}
            healthy = {m["name"] for m in st["members"]
                       if m["in_cluster"] and m["healthy"] and not m["learner"]}
            return live == want and healthy == want

        wait_for(check, timeout, f"voters {sorted(want)} healthy", interval=0.3,
                 abort=self.died)

    def etcdctl(self, host: str, *args: str, daemon: str | None = None,
                endpoints: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        pki = self.state_dir(daemon or self.daemon_hosts[0]) / "pki"
        eps = ",".join(f"https://{self.lab.host(m).address}:2379"
                       for m in (endpoints or self.members))
        return self.lab.exec(host, ETCDCTL, f"--endpoints={eps}", f"--cacert={pki / 'ca.crt'}",
                             f"--cert={pki / 'daemon-root.crt'}",
                             f"--key={pki / 'daemon-root.key'}", "--dial-timeout=3s",
                             "--command-timeout=5s", *args, timeout=30)

    def member_dir(self, name: str) -> Path:
        return self.data_root / name

    def member_pid(self, name: str) -> int | None:
        try:
            pid, start = (self.member_dir(name) / "etcd.pid").read_text().split()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ValueError):
            return None
        fields = stat[stat.rindex(")") + 2:].split()
        return int(pid) if fields[0] not in "ZX" and fields[19] == start else None

    def pid_host(self, pid: int) -> str | None:
        """Which lab host's network namespace `pid` lives in."""
        for name, h in self.lab.hosts.items():
            r = subprocess.run(["ip", "netns", "pids", h.ns], capture_output=True, text=True)
            if str(pid) in r.stdout.split():
                return name
        return None

    def servers(self, daemon: str) -> list[str]:
        try:
            return [u for u in self.servers_file(daemon).read_text().strip().split(",") if u]
        except FileNotFoundError:
            return []

    def url(self, member: str) -> str:
        return f"https://{self.lab.host(member).address}:2379"


def sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))

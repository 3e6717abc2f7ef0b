"""The rules of each config section: [cluster], [[members]], [ssh], [etcd] and the rest."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ckeetcd.core.config.reader import (
    Reader,
    is_host,
    member_address_problem,
)
from ckeetcd.core.config.schema import (
    DNS_LABEL_RE,
    ETCD_FLAG_RE,
    ETCD_FLAGS_REFUSED,
    ETCD_FLAGS_SET_BY_CKEETCD,
    ETCD_MAX_ELECTION_MS,
    ETCD_MAX_HEARTBEAT_MS,
    MAX_BACKUP_INTERVAL,
    MAX_BACKUPS,
    MAX_QUOTA_BYTES,
    MEMBER_SERVICES,
    MIN_DAEMON_CERT_LIFETIME,
    MIN_MEMBER_CERT_LIFETIME,
    MIN_QUOTA_BYTES,
    NAME_RE,
    REMOTE_PATH_RE,
    RUNTIMES,
    ApiserverConfig,
    BackupConfig,
    ClusterConfig,
    DaemonConfig,
    EtcdConfig,
    KubernetesConfig,
    MaintenanceConfig,
    MemberConfig,
    MetricsConfig,
    SSHConfig,
    TLSConfig,
    UserConfig,
)
from ckeetcd.core.keyspace import (
    CKEETCD_PREFIX,
    MAX_PREFIX_BYTES,
    REGISTRY_PREFIX,
    prefixes_overlap,
)
from ckeetcd.core.syspaths import character_problem, system_dir_problem
from ckeetcd.core.textcheck import show


class Validator(Reader):
    """Each section's checks; `parse_config` calls them in file order."""

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
            self.known(m, prefix, {"name", "address", "runtime", "ssh_host", "etcd_binary"})
            name = self.name(f"{prefix}.name", self.string(m, prefix, "name"))
            address = self.address(f"{prefix}.address", self.string(m, prefix, "address"))
            runtime = self.choice(m, prefix, "runtime", RUNTIMES, default_runtime)
            ssh_host = self.string(m, prefix, "ssh_host", "") or ""
            if ssh_host and not is_host(ssh_host):
                self.bad(f"{prefix}.ssh_host", f"{show(ssh_host)} is not a host name or "
                                               "IP address")
            binary = self.member_binary(m, prefix, runtime)
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
                                        ssh_host=ssh_host, etcd_binary=binary))
        return tuple(out)

    def member_binary(self, m: Mapping[str, Any], prefix: str, runtime: str) -> str:
        """`[[members]] etcd_binary`: an absolute path on an SSH member's node."""
        binary = self.string(m, prefix, "etcd_binary", "") or ""
        key = f"{prefix}.etcd_binary"
        if binary and runtime != "ssh":
            self.bad(key, "only for members with runtime = \"ssh\" (a local member runs "
                          "[etcd] binary)")
        elif binary and not (binary.startswith("/") and REMOTE_PATH_RE.fullmatch(binary)):
            self.bad(key, f"{show(binary)}: must be an absolute path on the member's node, "
                          "of letters, digits and ._+-/ only")
        return binary

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
                "quota_backend_bytes", "extra_args", "rolling_changes"}
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
            rolling_changes=self.boolean(t, "etcd", "rolling_changes", True),
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
        self.known(t, "apiserver", {"etcd_servers_file", "reload_command", "drain_seconds"})
        f = self.string(t, "apiserver", "etcd_servers_file", "")
        d = ApiserverConfig()
        return ApiserverConfig(
            etcd_servers_file=self.path(f) if f else None,
            reload_command=self.strings(t, "apiserver", "reload_command"),
            drain_seconds=self.number(t, "apiserver", "drain_seconds", d.drain_seconds, 0, 60,
                                      unit="seconds"),
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

    def tls(self, t: Mapping[str, Any]) -> TLSConfig:
        self.known(t, "tls", {"member_cert_lifetime", "member_cert_renew_before",
                              "daemon_cert_lifetime", "rotation_grace"})
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
        grace = self.duration(t, "tls", "rotation_grace", d.rotation_grace)
        return TLSConfig(member_cert_lifetime=lifetime, member_cert_renew_before=renew,
                         daemon_cert_lifetime=daemon, rotation_grace=grace)

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

"""What we want, what we see, what we do: plain frozen values, no I/O.

Desired members are matched to live members by peer URL: it is unique per
address, and a member that was added but never started has no name yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from ckeetcd.core.carotation import RotationSeen
from ckeetcd.core.config import Config, MemberConfig
from ckeetcd.core.etcdversions import auth_hold
from ckeetcd.core.kinds import NODE_LOCAL_OPS, OpKind, Phase, Reason, Role


@dataclass(frozen=True)
class DesiredMember:
    name: str
    address: str
    client_url: str
    peer_url: str


@dataclass(frozen=True)
class DesiredUser:
    name: str
    prefix: str


KUBE_APISERVER = DesiredUser("kube-apiserver", "/registry/")


@dataclass(frozen=True)
class Desired:
    cluster_name: str
    members: tuple[DesiredMember, ...]
    users: tuple[DesiredUser, ...] = (KUBE_APISERVER,)
    prune_users: bool = False
    learner_timeout: float = 60.0
    apiserver_file: bool = False
    member_dns: tuple[str, ...] = ("localhost",)  # DNS SANs of member server certs
    paused: bool = False  # [daemon] paused: no automatic changes
    defrag_threshold: float = 0.0  # scheduled defrag above this free share (0 = off)
    defrag_min_db_size: int = 0  # ... of databases at least this big (bytes)
    etcd_flags: tuple[str, ...] = ()  # [etcd] extra_args: the version-path rules ask
    rolling_changes: bool = True  # [etcd] rolling_changes
    rotation_grace: float = 86400.0  # [tls] rotation_grace: old user certs after a rotation

    def by_peer_url(self, peer_url: str) -> DesiredMember | None:
        return next((m for m in self.members if m.peer_url == peer_url), None)

    def by_name(self, name: str) -> DesiredMember | None:
        return next((m for m in self.members if m.name == name), None)

    @staticmethod
    def from_config(config: Config) -> Desired:
        def member(m: MemberConfig) -> DesiredMember:
            return DesiredMember(m.name, m.address, config.client_url(m), config.peer_url(m))

        extra = tuple(
            DesiredUser(u.name, u.prefix) for u in config.users if u.name != KUBE_APISERVER.name
        )
        users = (KUBE_APISERVER, *extra)
        return Desired(
            cluster_name=config.cluster.name,
            members=tuple(member(m) for m in config.members),
            users=users,
            prune_users=config.prune_users,
            learner_timeout=config.daemon.learner_timeout,
            apiserver_file=config.apiserver.etcd_servers_file is not None,
            member_dns=member_dns_names(config),
            paused=config.daemon.paused,
            defrag_threshold=config.maintenance.defrag_threshold,
            defrag_min_db_size=config.maintenance.min_db_size,
            etcd_flags=tuple(config.etcd.extra_args),
            rolling_changes=config.etcd.rolling_changes,
            rotation_grace=config.tls.rotation_grace.total_seconds(),
        )


def member_dns_names(config: Config) -> tuple[str, ...]:
    """DNS SANs for member server certs: localhost, plus the Service names when published."""
    names = ["localhost"]
    k = config.kubernetes
    if k is not None:
        names += [k.name, f"{k.name}.{k.namespace}", f"{k.name}.{k.namespace}.svc"]
        if k.cluster_domain:
            names.append(f"{k.name}.{k.namespace}.svc.{k.cluster_domain}")
    return tuple(names)


@dataclass(frozen=True)
class LiveMember:
    """One entry of etcd's member list."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    learner: bool = False

    @property
    def peer_url(self) -> str:
        return self.peer_urls[0] if self.peer_urls else ""

    @property
    def started(self) -> bool:
        """The member has run and published itself: etcd fills in its client URLs.

        Not its name: a member of the bootstrap initial cluster carries its name
        from the start (etcd 3.5), only one added by MemberAdd lacks it.
        """
        return bool(self.client_urls)


@dataclass(frozen=True)
class Health:
    """What a member's own Status RPC said (or why it said nothing)."""

    healthy: bool
    member_id: int = 0
    leader_id: int = 0
    raft_index: int = 0
    raft_term: int = 0
    db_size: int = 0
    learner: bool = False
    version: str = ""
    error: str = ""
    db_size_in_use: int = 0
    raft_applied_index: int = 0
    alarms: tuple[tuple[int, str], ...] = ()  # (member ID, "NOSPACE"/"CORRUPT"), cluster-wide
    revision: int = 0  # of its store (header.revision)

    @property
    def fragmentation(self) -> float:
        """Share of the database file that is free pages (0 when unknown)."""
        if self.db_size <= 0 or self.db_size_in_use <= 0:
            return 0.0
        return max(0.0, 1.0 - self.db_size_in_use / self.db_size)


@dataclass(frozen=True)
class Runtime:
    """The member process on its node, as the node runtime sees it."""

    reachable: bool = True
    running: bool = False
    has_data: bool = False
    pid: int | None = None
    error: str = ""
    tls_problem: str = ""  # why the member's certificates need renewing ("" = fine)
    restoring: str = ""  # the restore-in-progress marker in its member dir ("" = none)
    # Restart back-off (ckeetcd.core.restarts): while `held_until` (wall-clock time,
    # 0 = not held) is ahead, the member is not started again; `starts` in
    # its current streak, `last_exit` how its etcd ended last ("" = unknown).
    held_until: float = 0.0
    starts: int = 0
    last_exit: str = ""
    # Bytes free on the filesystem of its member dir (None: the runtime cannot tell);
    # a hold after a disk-full exit ends once there is room again (ckeetcd.core.restarts).
    disk_free: int | None = None
    # A rolling change (ckeetcd.core.rollplan): the version `--version` of the binary a
    # (re)start would run says ("" = unknown), and how the restart-relevant flags the
    # running process was started with differ from what a restart would give (() = same,
    # or unknown: a member whose start was not recorded counts as current).
    wanted_version: str = ""
    flag_change: tuple[str, ...] = ()
    trust_files: tuple[tuple[str, str], ...] = ()  # (role, file its trusted-CA flag names)
    # ckeetcd.core.peercn: the --peer-cert-allowed-cn its start recorded ("" none; None no
    # record), and the CN of its installed peer.crt ("" no file; None not read).
    allowed_cn: str | None = None
    peer_cert_cn: str | None = None
    # Why what a restart would run cannot be told (the binary is missing, fails, or its
    # `--version` names no etcd version; "" = it can): a rolling change holds meanwhile.
    change_unknown: str = ""


@dataclass(frozen=True)
class MemberExit:
    """How a member's etcd process ended, as far as its node can tell."""

    status: str  # "exit status 1", "killed by signal 9 (SIGKILL)", "unknown (...)"
    code: int | None = None
    signal: int | None = None
    log_tail: tuple[str, ...] = ()  # the last lines etcd wrote in this run
    reason: str = ""  # the line of its log that best says why ("" = none found)


@dataclass(frozen=True)
class Observed:
    """One immutable snapshot of the cluster, gathered at one moment.

    `members` is None when no endpoint answered MemberList. `health` is keyed by
    member ID, `runtimes` by member name. `learner_ages` gives, per learner
    ID, how long (seconds) the observer has seen it as a learner. `formed`
    says a cluster was seen healthy before (so no member may bootstrap anew);
    `published` is what the etcd servers file lists (None: no such file kept).
    `alarms` are the active etcd alarms as (member ID, "NOSPACE"/"CORRUPT");
    `paused` says why automatic changes are paused by command ("" = not);
    `cert_expiry` is, per member name, when its server or peer certificate
    expires first (Unix time; members whose files could be read).
    `cluster_version` is etcd's `etcdcluster` ("3.5.0"; "" when unknown); each
    member's own version is in its Health (Status).
    """

    members: tuple[LiveMember, ...] | None
    health: Mapping[int, Health] = field(default_factory=lambda: MappingProxyType({}))
    runtimes: Mapping[str, Runtime] = field(default_factory=lambda: MappingProxyType({}))
    alarms: tuple[tuple[int, str], ...] = ()
    rbac_ready: bool | None = None
    learner_ages: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({}))
    formed: bool = False
    published: tuple[str, ...] | None = None
    paused: str = ""
    cert_expiry: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    cluster_version: str = ""
    rotation: RotationSeen | None = None  # CA rotations (ckeetcd.core.carotation); None: none

    # ---- named predicates used by the ladder -------------------------------
    def runtime(self, name: str) -> Runtime:
        return self.runtimes.get(name, Runtime(reachable=False))

    def is_healthy(self, member: LiveMember) -> bool:
        h = self.health.get(member.id)
        return bool(h and h.healthy)

    def live_by_peer_url(self, peer_url: str) -> LiveMember | None:
        return next((m for m in self.members or () if peer_url in m.peer_urls), None)

    def voters(self) -> tuple[LiveMember, ...]:
        return tuple(m for m in self.members or () if not m.learner)

    def learners(self) -> tuple[LiveMember, ...]:
        return tuple(m for m in self.members or () if m.learner)

    def healthy_voters(self) -> tuple[LiveMember, ...]:
        return tuple(m for m in self.voters() if self.is_healthy(m))

    def leader_id(self) -> int:
        """The leader most healthy members agree on (0 when none)."""
        votes: dict[int, int] = {}
        for h in self.health.values():
            if h.healthy and h.leader_id:
                votes[h.leader_id] = votes.get(h.leader_id, 0) + 1
        return max(votes, key=lambda k: votes[k]) if votes else 0

    def has_quorum(self) -> bool:
        voters = self.voters()
        return bool(voters) and len(self.healthy_voters()) >= quorum(len(voters))

    def all_healthy(self) -> bool:
        return self.members is not None and all(self.is_healthy(m) for m in self.members)

    def has_alarm(self, alarm: str) -> bool:
        return any(a == alarm for _, a in self.alarms)

    def member_versions(self) -> tuple[tuple[str, str], ...]:
        """(member name or hex ID, server version) of the members that answered Status,
        by name: status, plan and the log list them the same way every time."""
        return tuple(sorted((m.name or f"{m.id:x}", h.version) for m in self.members or ()
                            if (h := self.health.get(m.id)) is not None and h.healthy
                            and h.version))

    def auth_hold(self) -> str:
        """Why no auth change may be written now ("" = none); see etcdversions.auth_hold."""
        return auth_hold(self.member_versions(), self.cluster_version)


def quorum(voters: int) -> int:
    """Votes needed for a decision in a raft group of `voters` members."""
    return voters // 2 + 1


@dataclass(frozen=True, kw_only=True)
class Op:
    """One operation the runner carries out; `kind` is its kebab-case name.

    The base holds what every op is about (a member, by node name, ID and
    URLs, all optional); each op family below adds its own named fields and
    says which kinds it carries (`KINDS`; a family of one kind names it as the
    default of `kind` instead), so an op can only be built with the fields
    its kind needs. The base itself builds none.
    """

    KINDS: ClassVar[frozenset[OpKind]] = frozenset()

    kind: OpKind
    member: str = ""
    member_id: int = 0
    peer_url: str = ""
    client_url: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        only = cls.__dict__.get("kind")
        if "KINDS" not in cls.__dict__ and isinstance(only, OpKind):
            cls.KINDS = frozenset({only})

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise TypeError(f"{type(self).__name__} cannot carry op {self.kind!s}")

    def targets(self) -> str:
        return self.member


@dataclass(frozen=True, kw_only=True)
class StartMember(Op):
    """start-member (new, or joining on an empty data dir) or restart-member (on its data).

    `initial_cluster` holds the name=peer_url pairs etcd is started with.
    """

    KINDS: ClassVar[frozenset[OpKind]] = frozenset({OpKind.START_MEMBER,
                                                    OpKind.RESTART_MEMBER})
    initial_cluster: tuple[tuple[str, str], ...] = ()
    initial_state: Literal["new", "existing"] = "existing"


@dataclass(frozen=True, kw_only=True)
class StopMember(Op):
    """stop-member; `archive_data`: then move its data aside (it leaves, or is re-added)."""

    kind: OpKind = OpKind.STOP_MEMBER
    archive_data: bool = False
    pre_snapshot: bool = False  # a rolling restart: a verified snapshot first, once per
    snapshot_tag: str = ""  # ... change: skipped when one with this tag exists already
    # Cut from the etcd servers file just before (same decision): wait [apiserver]
    # drain_seconds first, so clients that follow the file are off it when it stops.
    drain: bool = False


@dataclass(frozen=True, kw_only=True)
class MoveLeader(Op):
    """move-leader: etcd's MoveLeader, sent to the raft leader, to `member` (`member_id`).

    `drain`: the leader was cut from the etcd servers file just before (same
    decision): wait [apiserver] drain_seconds first, so that no client sends it
    a write while it hands over (raft drops proposals during a transfer)."""

    kind: OpKind = OpKind.MOVE_LEADER
    drain: bool = False


@dataclass(frozen=True, kw_only=True)
class AddMember(Op):
    kind: OpKind = OpKind.ADD_MEMBER


@dataclass(frozen=True, kw_only=True)
class RemoveMember(Op):
    kind: OpKind = OpKind.REMOVE_MEMBER


@dataclass(frozen=True, kw_only=True)
class PromoteMember(Op):
    kind: OpKind = OpKind.PROMOTE_MEMBER


@dataclass(frozen=True, kw_only=True)
class RenewCerts(Op):
    """renew-member-certs; `problem` says why its certificates must be replaced."""

    kind: OpKind = OpKind.RENEW_MEMBER_CERTS
    problem: str = ""
    rotate: str = ""  # a CA rotation's re-issue: the role (peer, client) whose new CA signs


@dataclass(frozen=True, kw_only=True)
class RotateCA(Op):
    """rotate-ca: the step `act` (ckeetcd.core.carotation.Act) of the rotation of `role`."""

    KINDS: ClassVar[frozenset[OpKind]] = frozenset({OpKind.ROTATE_CA})
    kind: OpKind = OpKind.ROTATE_CA
    role: str = ""
    act: str = ""

    def targets(self) -> str:
        return f"{self.role}:{self.act}"


@dataclass(frozen=True, kw_only=True)
class EnsureRbac(Op):
    kind: OpKind = OpKind.ENSURE_RBAC


@dataclass(frozen=True, kw_only=True)
class ServersFile(Op):
    """stop-apiserver-traffic or publish-endpoints: write these client URLs to the
    etcd servers file (node-local)."""

    KINDS: ClassVar[frozenset[OpKind]] = NODE_LOCAL_OPS
    endpoints: tuple[str, ...] = ()

    def targets(self) -> str:
        return ",".join(self.endpoints)


@dataclass(frozen=True, kw_only=True)
class Compact(Op):
    """compact the key-value history; `reason` is logged with it."""

    kind: OpKind = OpKind.COMPACT
    reason: Reason = Reason.NOSPACE


@dataclass(frozen=True, kw_only=True)
class DefragMember(Op):
    """defrag-member; a `fragmented` one is skipped once it no longer is, a `nospace` one
    always runs."""

    kind: OpKind = OpKind.DEFRAG_MEMBER
    reason: Reason = Reason.FRAGMENTED


@dataclass(frozen=True, kw_only=True)
class DisarmAlarm(Op):
    """disarm-alarm of this etcd alarm type ("NOSPACE") for every member that raised it."""

    kind: OpKind = OpKind.DISARM_ALARM
    alarm: str = "NOSPACE"


OP_TYPES: Mapping[OpKind, type[Op]] = MappingProxyType({
    kind: cls for cls in (StartMember, StopMember, AddMember, RemoveMember, PromoteMember,
                          RenewCerts, EnsureRbac, ServersFile, Compact, DefragMember,
                          DisarmAlarm, MoveLeader, RotateCA)
    for kind in cls.KINDS
})


@dataclass(frozen=True)
class Decision:
    """What to do now: a phase, ops in order, why, and the role they were planned for."""

    phase: Phase
    ops: tuple[Op, ...] = ()
    reason: str = ""
    role: Role = Role.SINGLE

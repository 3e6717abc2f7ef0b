"""The names of op kinds, phases and roles, and the sets of them: one source.

These strings are contract: they reach the logs (`op`, `phase`, `role`), the
history, the metrics labels, `ckeetcd plan` and its JSON. `StrEnum` members
are `str`s whose value is the name, so formatting, JSON, comparisons with
plain strings and hashing all give the bytes they gave before.
"""

from __future__ import annotations

from enum import StrEnum


class OpKind(StrEnum):
    """Every operation the runner knows (one module of ckeetcd/ops each)."""

    START_MEMBER = "start-member"
    RESTART_MEMBER = "restart-member"
    STOP_MEMBER = "stop-member"
    REMOVE_MEMBER = "remove-member"
    ADD_MEMBER = "add-member"
    PROMOTE_MEMBER = "promote-member"
    ENSURE_RBAC = "ensure-rbac"
    RENEW_MEMBER_CERTS = "renew-member-certs"
    STOP_APISERVER_TRAFFIC = "stop-apiserver-traffic"
    PUBLISH_ENDPOINTS = "publish-endpoints"
    COMPACT = "compact"
    DEFRAG_MEMBER = "defrag-member"
    DISARM_ALARM = "disarm-alarm"
    MOVE_LEADER = "move-leader"  # etcd's MoveLeader, before a rolling change restarts the leader
    ROTATE_CA = "rotate-ca"  # one step of a CA rotation (ckeetcd.core.carotation)


class Phase(StrEnum):
    """What a decision is about (the `phase` of the cycle line and the metrics)."""

    BOOTSTRAP = "bootstrap"
    REPAIR = "repair"
    CERTS = "certs"
    NO_QUORUM = "no-quorum"
    RBAC = "rbac"
    MEMBER_ADD = "member-add"
    PROMOTE = "promote"
    MEMBER_REMOVE = "member-remove"
    PUBLISH = "publish"
    DEGRADED = "degraded"
    STEADY = "steady"
    NOSPACE = "nospace"
    DEFRAG = "defrag"
    CORRUPT = "corrupt"
    PAUSED = "paused"
    RESTORING = "restoring"
    CONFIG_DRIFT = "config-drift"
    BACKOFF = "backoff"
    REFUSED = "refused"  # the plan broke one of its own invariants: nothing runs (a bug)
    ROLLING = "rolling"  # members restarted one at a time on a new binary or new flags
    UPGRADE_REFUSED = "upgrade-refused"  # the wanted etcd version change is not supported
    CA_ROTATION = "ca-rotation"  # a CA rotation's step, or its wait (the grace period)


class Role(StrEnum):
    """What this daemon may do (ckeetcd.coordination.election): the `role` of the cycle line."""

    SINGLE = "single"  # no election: the only daemon
    LEADER = "leader"
    FOLLOWER = "follower"
    BOOTSTRAPPER = "bootstrapper"  # no quorum to elect through: acts alone, unfenced


class Reason(StrEnum):
    """Why a compaction or a defragmentation was asked for (logged as `reason`)."""

    NOSPACE = "nospace"
    FRAGMENTED = "fragmented"


# Ops that touch only this node (its etcd servers file): every daemon runs them, unfenced.
NODE_LOCAL_OPS = frozenset({OpKind.STOP_APISERVER_TRAFFIC, OpKind.PUBLISH_ENDPOINTS})
# Ops that change who is in the cluster: held while the daemons' configs disagree.
MEMBERSHIP_OPS = frozenset({OpKind.STOP_MEMBER, OpKind.REMOVE_MEMBER, OpKind.ADD_MEMBER,
                            OpKind.START_MEMBER, OpKind.PROMOTE_MEMBER})
# Ops that change etcd's member list: at most one per decision.
MEMBER_LIST_CHANGES = frozenset({OpKind.ADD_MEMBER, OpKind.REMOVE_MEMBER,
                                 OpKind.PROMOTE_MEMBER})
# Starts run side by side (members of a forming cluster become healthy together).
STARTS = frozenset({OpKind.START_MEMBER, OpKind.RESTART_MEMBER})
# Without quorum, a follower may still run this for a member of its own node.
SELF_HEAL_OP = OpKind.RESTART_MEMBER
# Phases where nothing is in flight; in any other the daemon loop polls faster.
SETTLED_PHASES = frozenset({Phase.STEADY, Phase.DEGRADED, Phase.NO_QUORUM, Phase.PAUSED,
                            Phase.CORRUPT, Phase.RESTORING, Phase.CONFIG_DRIFT,
                            Phase.BACKOFF, Phase.REFUSED, Phase.UPGRADE_REFUSED,
                            Phase.CA_ROTATION})

"""A CA rotation in the plan: from the observation to carotation's facts, and its step
to ops. Called by the ladder (ckeetcd.core.decide) once every member is healthy and
nothing else is to be done, before any rolling change.

The restarts a trust change needs go through the rolling change's own rules
(ckeetcd.core.rolling.rolling_next: one member at a time, followers first, the
leader last after move-leader, only while every member is healthy and caught
up; a verified snapshot before the first stop, once per bundle). The trusted-CA
flags are the rotation's own fingerprint: the bundle file a member runs with is
named by its content (carotation.trust_file) and read back from the recorded
command line, so the generic flag comparison leaves them out
(ckeetcd.core.memberchange.IDENTITY_FLAGS).
"""

from __future__ import annotations

import datetime as dt

from ckeetcd.core.carotation import (
    CLIENT,
    LEGACY_TRUST,
    Act,
    Facts,
    MemberTrust,
    Next,
    Record,
    next_step,
    signer_is_new,
    trust_file,
    trust_of,
    wanted_trust,
)
from ckeetcd.core.kinds import OpKind, Phase
from ckeetcd.core.model import (
    Decision,
    Desired,
    MoveLeader,
    Observed,
    RenewCerts,
    RotateCA,
    StartMember,
    StopMember,
    quorum,
)
from ckeetcd.core.rolling import Done, Restart, roll_members, rolling_next
from ckeetcd.core.rolling import MoveLeader as MoveStep
from ckeetcd.core.rollplan import node_name

# Client rotation stages in which a member's server certificate may be from either CA.
SERVERS_MIXED = ("reissue-members", "reissue-daemons", "grace", "drop-old", "finish")



def facts(record: Record, desired: Desired, observed: Observed) -> Facts:
    """carotation's facts for `record` from one observation (members in config order)."""
    seen = observed.rotation
    new_ca = bool(seen and record.role in seen.new_ca)
    members = []
    for m in observed.members or ():
        name = node_name(desired, m)
        files = dict(observed.runtime(name).trust_files)
        members.append(MemberTrust(
            name=name, healthy=observed.is_healthy(m),
            trusts=trust_of(record.role, files.get(record.role, ""), record),
            cert_from=seen.signed_by(name, record.role) if seen else ""))
    daemons = seen.daemons if seen and record.role == CLIENT else ()
    return Facts(record, new_ca, tuple(members), daemons, seen.now if seen else 0.0,
                 desired.rotation_grace)


def role_facts(role: str, desired: Desired, observed: Observed) -> Facts | None:
    """The facts of `role`'s rotation (None: the role was never rotated)."""
    record = observed.rotation.record(role) if observed.rotation else None
    return facts(record, desired, observed) if record else None


def rotation_step(desired: Desired, observed: Observed) -> Decision | None:
    """The decision of the rotation under way (None: none is)."""
    record = observed.rotation.active() if observed.rotation else None
    if record is None:
        return None
    return rotation_decision(desired, observed, facts(record, desired, observed))


def trust_name(role: str, f: Facts | None, separate: bool) -> str:
    """The member tls file a member started now must name for `role`'s trusted CAs: the
    legacy name until the role's first rotation, then the bundle of wanted_trust."""
    if f is None:
        return LEGACY_TRUST[role] if role == CLIENT or separate else LEGACY_TRUST[CLIENT]
    return trust_file(role, wanted_trust(f))


def signer_new(f: Facts | None) -> bool:
    return f is not None and signer_is_new(f)


def rotation_decision(desired: Desired, observed: Observed, f: Facts) -> Decision | None:
    """The rotation's next step as a decision; None when it is done."""
    step = next_step(f)
    role = f.record.role
    why = f"{role} CA rotation, {step.stage}: {step.reason}"
    if step.act == Act.NONE:
        return None
    if step.act in (Act.MAKE_CA, Act.START_GRACE, Act.FINISH, Act.REISSUE_DAEMON):
        return Decision(Phase.CA_ROTATION, (RotateCA(role=role, act=step.act),), why)
    if step.act == Act.REISSUE_MEMBER:
        m = next(x for x in observed.members or () if node_name(desired, x) == step.member)
        d = desired.by_name(step.member)
        return Decision(Phase.CA_ROTATION, (RenewCerts(
            member=step.member, member_id=m.id, peer_url=m.peer_url,
            client_url=d.client_url if d else (m.client_urls[0] if m.client_urls else ""),
            problem=f"{role} CA rotation", rotate=role),), why)
    if step.act == Act.ROLL:
        return _roll(desired, observed, step, why, role)
    return Decision(Phase.CA_ROTATION, (), why)


def _roll(desired: Desired, observed: Observed, step: Next, why: str, role: str) -> Decision:
    waiting = set(step.waiting)
    roll = rolling_next(roll_members(observed, lambda m: node_name(desired, m) not in waiting))
    by_name = {node_name(desired, m): m for m in observed.members or ()}
    if isinstance(roll, Done):  # cannot be: waiting is not empty
        return Decision(Phase.CA_ROTATION, (), why)
    if isinstance(roll, MoveStep):
        to = by_name[roll.to]
        return Decision(Phase.CA_ROTATION, (MoveLeader(member=roll.to, member_id=to.id),),
                        f"{why}; {roll.reason}")
    if not isinstance(roll, Restart):
        return Decision(Phase.CA_ROTATION, (), f"{why}; waits: {roll.reason}")
    voters = len(observed.voters())
    if len(observed.healthy_voters()) - 1 < quorum(voters):
        return Decision(Phase.CA_ROTATION, (), f"{why}; restarting {roll.member} would lose "
                        f"quorum ({voters} voter{'s' if voters != 1 else ''}): add members "
                        "first, or restart it by hand (it starts on the wanted bundle)")
    m = by_name[roll.member]
    initial = tuple((x.name or f"member-{x.id:x}", u) for x in observed.members or ()
                    for u in x.peer_urls)
    client = m.client_urls[0] if m.client_urls else ""
    tag = trust_file(role, step.trust)  # one snapshot per bundle rolled out
    return Decision(Phase.CA_ROTATION, (
        StopMember(member=roll.member, member_id=m.id, pre_snapshot=True, snapshot_tag=tag),
        StartMember(kind=OpKind.RESTART_MEMBER, member=roll.member, member_id=m.id,
                    peer_url=m.peer_url, client_url=client, initial_cluster=initial,
                    initial_state="existing")), f"{why}; restart {roll.member}: {roll.reason}")


def rotation_view(desired: Desired, observed: Observed) -> dict[str, object] | None:
    """The rotation for `status` and `plan` (JSON `rotation`): the latest record of each
    role, the stage, what it waits for, and per member what it trusts and carries."""
    seen = observed.rotation
    if seen is None or not seen.records:
        return None
    roles: dict[str, object] = {}
    for record in seen.records:
        f = facts(record, desired, observed)
        step = next_step(f)

        def name_of(fp: str, r: Record = record) -> str:
            return "new" if fp and fp == r.new else "old" if fp and fp == r.old else "unknown"
        roles[record.role] = {
            "stage": str(step.stage), "reason": step.reason, "done": record.done,
            "migration": record.migration, "started": record.started,
            "grace_until": record.grace_until or None, "old": record.old,
            "new": record.new or None,
            "members": {m.name: {"trusts": sorted(name_of(x) for x in m.trusts)
                                 if m.trusts is not None else None,
                                 "certificate": name_of(m.cert_from)} for m in f.members}}
    active = seen.active()
    return {"active": active.role if active else None, "roles": roles}


def rotation_lines(view: dict[str, object] | None) -> list[str]:
    """`status`/`plan` text lines for a rotation view."""
    if not view:
        return []
    out = []
    roles = view["roles"]
    assert isinstance(roles, dict)
    for role, r in roles.items():
        if r["done"]:
            out.append(f"rotation: {role} CA rotated" + (" (migrated from one CA)"
                                                          if r["migration"] else ""))
            continue
        what = " (migration from one CA)" if r["migration"] else ""
        out.append(f"rotation: {role} CA{what}, stage {r['stage']}: {r['reason']}")
        if role == CLIENT and r["stage"] in SERVERS_MIXED:
            out.append("rotation: member server certificates come from either client CA now: "
                       "clients verify them with the old + new bundle (pki/client-bundle.crt, "
                       "the ca_certificate of `ckecli etcd issue`)")
        if r["grace_until"]:
            until = dt.datetime.fromtimestamp(r["grace_until"], dt.timezone.utc)
            out.append(f"rotation: user certificates of the old {role} CA accepted until "
                       f"{until:%Y-%m-%d %H:%M:%S} UTC (the grace period)")
        for name, m in r["members"].items():
            trusts = "+".join(m["trusts"]) if m["trusts"] is not None else "unknown"
            out.append(f"rotation: {name}: trusts {trusts}, certificate {m['certificate']}")
    return out

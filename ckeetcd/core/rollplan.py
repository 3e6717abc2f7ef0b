"""The rolling change as a decision: one member at a time onto a new binary or new flags
(the config's, or --peer-cert-allowed-cn once every peer certificate allows it).

Called by the ladder (ckeetcd.core.decide) only once nothing else is to be
done and every member is healthy. It checks the version change with
etcdversions.cluster_path first: a refused change touches no member (phase
"upgrade-refused", the reason says why). Otherwise rolling.rolling_next says
the step: restart a follower (stop, then restart on its data; the first stop
of a change takes a verified snapshot first, named by the change's tag, so a
daemon killed after it does not take another), move leadership to a member
already changed, or wait (a member behind the leader, a learner).
"""

from __future__ import annotations

from collections.abc import Mapping

from ckeetcd.core.etcdversions import Refused, cluster_path, facts_from_flags, parse_version
from ckeetcd.core.kinds import OpKind, Phase
from ckeetcd.core.memberchange import change_tag, member_change
from ckeetcd.core.model import (
    Decision,
    Desired,
    LiveMember,
    MoveLeader,
    Observed,
    StartMember,
    StopMember,
    quorum,
)
from ckeetcd.core.peercn import change_line, flag_due
from ckeetcd.core.rolling import Done, Restart, roll_members, rolling_next
from ckeetcd.core.rolling import MoveLeader as MoveStep


def node_name(desired: Desired, m: LiveMember) -> str:
    """A live member's node name (by its peer URL; its etcd name when no node has it)."""
    d = desired.by_peer_url(m.peer_url)
    return d.name if d else m.name


def pending(desired: Desired, observed: Observed) -> Mapping[str, tuple[str, ...]]:
    """Per member (by node name, config order) why it needs a restart; only those that do.
    A restart onto --peer-cert-allowed-cn is one, once every peer certificate carries
    the shared CN (ckeetcd.core.peercn.flag_due)."""
    out = {}
    onto_flag = set(flag_due(desired, observed))
    for m in observed.members or ():
        name = node_name(desired, m)
        change = member_change(observed.runtime(name), observed.health.get(m.id))
        if name in onto_flag:
            change += (change_line(),)
        if change:
            out[name] = change
    return out


def unknown(desired: Desired, observed: Observed) -> Mapping[str, str]:
    """Per member (by node name) why whether it needs a restart cannot be told: its
    node is unreachable, or the binary a restart would run cannot say its version.
    A rolling change holds while any is: such a member would count as changed, the
    leader could go to it, and the version path cannot be checked."""
    out = {}
    for m in observed.members or ():
        name = node_name(desired, m)
        rt = observed.runtime(name)
        if not rt.reachable:
            out[name] = f"its node is unreachable ({rt.error or 'not inspected'})"
        elif rt.running and rt.change_unknown:
            out[name] = rt.change_unknown
    return out


def describe(changes: Mapping[str, tuple[str, ...]]) -> str:
    return "; ".join(f"{n}: {', '.join(c)}" for n, c in changes.items())


def describe_unknown(blind: Mapping[str, str]) -> str:
    return "; ".join(f"{n}: {why}" for n, why in blind.items())


def refusal(desired: Desired, observed: Observed) -> str:
    """Why the wanted version change is refused ("" = allowed, or none wanted)."""
    running = [v for _, t in observed.member_versions() if (v := parse_version(t))]
    if not running:  # no version known: member_change sees no version change either
        return ""
    wanted = (observed.runtime(node_name(desired, m)).wanted_version
              for m in observed.members or ())
    targets = sorted({v for w in wanted if (v := parse_version(w))})
    facts = facts_from_flags(desired.etcd_flags)
    for target in targets:
        verdict = cluster_path(running, target, facts)
        if isinstance(verdict, Refused):
            return verdict.reason
    return ""


def held_out(desired: Desired, observed: Observed) -> int:
    """The member (id) the rolling change takes out of service next: the follower it
    restarts, or the leader it moves leadership off before restarting it; 0 = none.
    Once cut from the etcd servers file it stays out until its restart, so that the
    cut made before a move-leader is not undone before the stop."""
    changes = pending(desired, observed)
    if (not changes or not desired.rolling_changes or unknown(desired, observed)
            or refusal(desired, observed)):
        return 0
    step = rolling_next(roll_members(observed, lambda m: node_name(desired, m) not in changes))
    if isinstance(step, MoveStep):
        return observed.leader_id() or 0
    if not isinstance(step, Restart):
        return 0
    if len(observed.healthy_voters()) - 1 < quorum(len(observed.voters())):
        return 0
    return next((m.id for m in observed.members or ()
                 if node_name(desired, m) == step.member), 0)


def rolling_decision(desired: Desired, observed: Observed) -> Decision | None:
    """The rolling change's next step; None when every member runs what it should."""
    changes = pending(desired, observed)
    if not changes or not desired.rolling_changes:
        return None
    left = describe(changes)
    if blind := unknown(desired, observed):
        return Decision(Phase.ROLLING, (), "rolling change held: no member is restarted while "
                        f"what a restart would run is unknown ({describe_unknown(blind)}; "
                        f"wanted: {left})")
    why = refusal(desired, observed)
    if why:
        return Decision(Phase.UPGRADE_REFUSED, (), f"no member is restarted: {why} "
                                                   f"(wanted: {left})")
    step = rolling_next(roll_members(observed, lambda m: node_name(desired, m) not in changes))
    if isinstance(step, Done):
        return None
    by_name = {node_name(desired, m): m for m in observed.members or ()}
    if isinstance(step, MoveStep):
        to = by_name[step.to]
        return Decision(Phase.ROLLING, (MoveLeader(member=step.to, member_id=to.id),),
                        f"{step.reason} (left: {left})")
    voters = len(observed.voters())
    if isinstance(step, Restart) and len(observed.healthy_voters()) - 1 < quorum(voters):
        return Decision(Phase.ROLLING, (), f"restarting {step.member} would lose quorum "
                        f"({voters} voter{'s' if voters != 1 else ''}), so the daemon does not: "
                        "stop it by hand and the daemon starts it again on the new binary and "
                        f"flags, or add members first (left: {left})")
    if isinstance(step, Restart):
        m = by_name[step.member]
        client = m.client_urls[0] if m.client_urls else ""
        initial = tuple((x.name or f"member-{x.id:x}", u) for x in observed.members or ()
                        for u in x.peer_urls)
        ops = (StopMember(member=step.member, member_id=m.id, pre_snapshot=True,
                          snapshot_tag=change_tag(changes)),
               StartMember(kind=OpKind.RESTART_MEMBER, member=step.member, member_id=m.id,
                           peer_url=m.peer_url, client_url=client, initial_cluster=initial,
                           initial_state="existing"))
        return Decision(Phase.ROLLING, ops, f"restart {step.member} "
                        f"({', '.join(changes[step.member])}): {step.reason} (left: {left})")
    return Decision(Phase.ROLLING, (), f"rolling change waits: {step.reason} (left: {left})")

"""CA rotation without downtime, per role of trust (peer | client): a pure state machine.

The steps (issue 15), each computed from what is observed, never from memory:

1. new-ca: the rotation record exists, the new CA's files do not: make them (or
   load them: a daemon killed after writing them, before the record named the
   new CA, makes no second one);
2. trust-both: every member must run with a trusted-CA bundle holding old +
   new. etcd reads its trusted-CA files at start only, so the bundle reaches
   a member by a restart (the rolling change: one member at a time, followers
   first). The bundle file is named by its content (`trust_file`), so the
   command line a member was started with says which CAs it trusts: a killed
   daemon reads it back from the member's recorded fingerprint;
3. reissue-members: once every member trusts both, the members' certificates
   of this role (peer.crt, or server.crt for the client CA) come from the new
   CA, one member per step; etcd reads its own cert files on each new
   handshake, so no restart;
4. reissue-daemons (client CA): every daemon's root client certificate from
   the new CA (followers without the key through the leader, as for renewals);
5. grace (client CA): the record gets `grace_until` once (now + `[tls]
   rotation_grace`); user certificates of the old CA work until then;
6. drop-old: the bundle becomes the new CA alone, rolled out as in 2;
7. finish: the new CA's files take the place of the old ones (the old key is
   gone from this host), the record is marked done.

A one-CA cluster (made before the peer CA) migrates by a peer rotation whose
"old" CA is the shared client CA (`migration`): its peers end on peer-ca.crt
alone, and finish keeps ca.crt (still the client CA).

Signing: from the moment every member trusts the new CA, certificates of this
role are signed by it (`signer_is_new`): `ckecli etcd issue` hands out
new-CA user certificates and a bundle as `ca_certificate`, which verifies the
servers whichever CA signed their certificate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ckeetcd.core.durations import format_duration

PEER, CLIENT = "peer", "client"
ROLES = (PEER, CLIENT)
LEGACY_TRUST = {CLIENT: "ca.crt", PEER: "peer-ca.crt"}  # before any rotation of the role


class Stage(StrEnum):
    """Where a rotation stands (shown in plan, status and history as `stage`)."""

    NEW_CA = "new-ca"
    TRUST_BOTH = "trust-both"
    REISSUE_MEMBERS = "reissue-members"
    REISSUE_DAEMONS = "reissue-daemons"
    GRACE = "grace"
    DROP_OLD = "drop-old"
    FINISH = "finish"
    DONE = "done"


class Act(StrEnum):
    """What the daemon does for the stage (the op it runs, or waits)."""

    MAKE_CA = "make-ca"  # write the new CA (key first) next to the old one
    ROLL = "roll"  # restart members onto `trust` (the rolling change does it, one at a time)
    REISSUE_MEMBER = "reissue-member"  # `member`'s certificate of this role from the new CA
    REISSUE_DAEMON = "reissue-daemon"  # this daemon's own root certificate from the new CA
    START_GRACE = "start-grace"  # persist grace_until in the record
    FINISH = "finish"  # the new CA's files replace the old ones; record marked done
    WAIT = "wait"  # nothing may be done now; `reason` says what is awaited
    NONE = "none"  # the rotation is done


@dataclass(frozen=True)
class Record:
    """The persisted rotation of one role (see ckeetcd.pki.rotationfiles for where).

    `old` and `new` are CA fingerprints (`fingerprint`); `new` is "" until the
    new CA is made. `grace_until` is Unix time, 0 until the grace began."""

    role: str
    old: str
    new: str = ""
    started: float = 0.0
    grace_until: float = 0.0
    migration: bool = False
    done: bool = False


@dataclass(frozen=True)
class MemberTrust:
    """One member as the rotation of a role sees it."""

    name: str
    healthy: bool
    trusts: frozenset[str] | None  # CAs its running process trusts for the role (None: unknown)
    cert_from: str  # fingerprint of the CA that signed its certificate of the role ("" unknown)


@dataclass(frozen=True)
class DaemonCert:
    """A daemon's root client certificate: who signed it (client rotations only)."""

    daemon: str
    cert_from: str
    me: bool = False  # the daemon that plans


@dataclass(frozen=True)
class Facts:
    record: Record
    # The new CA *with its key* is on this host: the next CA's files, or (after a finish
    # that stopped before the record said done) the CA files themselves. Without it a
    # daemon still follows the stages from the (mirrored) public record, but holds every
    # step: the steps after new-ca sign with the new CA or move its key into place.
    new_ca: bool
    members: tuple[MemberTrust, ...]
    daemons: tuple[DaemonCert, ...] = ()
    now: float = 0.0
    grace: float = 0.0  # seconds old user certificates keep working (client CA)


@dataclass(frozen=True)
class Next:
    stage: Stage
    act: Act
    reason: str
    trust: frozenset[str]  # the bundle of this role a member (re)started now must trust
    member: str = ""  # REISSUE_MEMBER: which one
    waiting: tuple[str, ...] = ()  # ROLL: members not yet on `trust` (config order)


@dataclass(frozen=True)
class RotationSeen:
    """What the observer read for CA rotations: the records (pki dir), per member name
    which CA signed its certificate of each role ((role, fingerprint), file reads),
    and the daemons' root certificates."""

    records: tuple[Record, ...] = ()
    cert_from: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    daemons: tuple[DaemonCert, ...] = ()
    new_ca: frozenset[str] = frozenset()  # roles whose new CA is here (Facts.new_ca)
    now: float = 0.0  # the observer's wall clock (Unix time): the grace period's

    def active(self) -> Record | None:
        return next((r for r in self.records if not r.done), None)

    def record(self, role: str) -> Record | None:
        return next((r for r in self.records if r.role == role), None)

    def signed_by(self, member: str, role: str) -> str:
        return dict(dict(self.cert_from).get(member, ())).get(role, "")


def fingerprint(cert_der: bytes) -> str:
    """A CA's name in records and bundle file names: SHA-256 of its DER, 16 hex digits."""
    return hashlib.sha256(cert_der).hexdigest()[:16]


def trust_file(role: str, trust: Iterable[str]) -> str:
    """The member tls file of a bundle: named by its content, so a changed bundle is a
    changed flag (a restart) and a recorded command line says what a member trusts."""
    digest = hashlib.sha256(",".join(sorted(trust)).encode()).hexdigest()[:12]
    return f"trust-{role}-{digest}.crt"


def trust_of(role: str, file_name: str, record: Record | None) -> frozenset[str] | None:
    """The CAs a member trusts, from the file name its trusted-CA flag names (the
    recorded command line): the legacy name trusts the old CA (no rotation reached it),
    a bundle name one of the sets this rotation uses, anything else is unknown."""
    if record is None:
        return None
    if file_name == LEGACY_TRUST[role] or (role == PEER and record.migration
                                           and file_name == LEGACY_TRUST[CLIENT]):
        return frozenset({record.old})
    sets = [frozenset({record.old})] + ([frozenset({record.old, record.new}),
                                         frozenset({record.new})] if record.new else [])
    return next((s for s in sets if trust_file(role, s) == file_name), None)


def wanted_trust(facts: Facts) -> frozenset[str]:
    """The bundle members must run with now: old + new from the new CA on, the new CA
    alone once nothing signed by the old one is in use (members, daemons, the grace)."""
    r = facts.record
    if r.done:
        return frozenset({r.new})
    if not r.new:
        return frozenset({r.old})
    if _old_in_use(facts):
        return frozenset({r.old, r.new})
    return frozenset({r.new})


def _old_in_use(facts: Facts) -> bool:
    r = facts.record
    if any(m.cert_from != r.new for m in facts.members):
        return True
    if r.role == CLIENT:
        if any(d.cert_from != r.new for d in facts.daemons):
            return True
        if not r.grace_until or facts.now < r.grace_until:
            return True
    return False


def signer_is_new(facts: Facts) -> bool:
    """Whether certificates of the role are signed by the new CA now: once every member
    runs trusting it (before, a new-CA certificate would be refused somewhere)."""
    r = facts.record
    if r.done:
        return True
    return bool(r.new and facts.members) and all(
        m.trusts is not None and r.new in m.trusts for m in facts.members)


def key_missing(role: str) -> str:
    """What a daemon without the new CA's key says and what the operator copies."""
    return (f"the new {role} CA's key is not on this host (pki/next-{role}/): a leader here "
            "holds the rotation; copy it from the daemon host that made it (there: `ckeetcd "
            "ca export --out FILE`, here: `ckeetcd ca import FILE`)")


def next_step(facts: Facts) -> Next:
    """The next step of the rotation (pure; each step idempotent, each computed anew).
    Where the new CA's key is not here, every step past new-ca is held (WAIT): the
    stage is the same as where the key is, nothing is half-done."""
    step = _next_step(facts)
    if facts.new_ca or step.act in (Act.NONE, Act.MAKE_CA):
        return step
    return Next(step.stage, Act.WAIT, f"held: {key_missing(facts.record.role)}; next: "
                f"{step.reason}", step.trust)


def _next_step(facts: Facts) -> Next:
    r = facts.record
    if r.done:
        return Next(Stage.DONE, Act.NONE, f"{r.role} CA rotated", frozenset({r.new}))
    if not r.new:  # a CA made by a killed daemon is loaded, never a second one made
        return Next(Stage.NEW_CA, Act.MAKE_CA, f"make the new {r.role} CA",
                    frozenset({r.old}))
    if sick := [m.name for m in facts.members if not m.healthy]:
        return Next(_stage_of(facts), Act.WAIT, f"{', '.join(sick)} not healthy: the "
                    f"{r.role} CA rotation waits until every member is", wanted_trust(facts))
    both = frozenset({r.old, r.new})
    # 2. every member trusts old + new (or, later, trusts new and carries new).
    off = [m.name for m in facts.members if not _trusts_new(m, r)]
    if off:
        return _roll(Stage.TRUST_BOTH, both, off, f"members restart one at a time onto a "
                     f"{r.role} trust bundle of the old and the new CA")
    # 3. member certificates from the new CA, one member per step.
    for m in facts.members:
        if m.cert_from != r.new:
            return Next(Stage.REISSUE_MEMBERS, Act.REISSUE_MEMBER,
                        f"re-issue {m.name}'s {_cert_name(r.role)} from the new {r.role} CA "
                        "(etcd reads it on the next handshake: no restart)", both,
                        member=m.name)
    if r.role == CLIENT:
        # 4. daemons' own certificates; followers renew through the leader.
        old = [d for d in facts.daemons if d.cert_from != r.new]
        mine = [d for d in old if d.me]
        if mine:
            return Next(Stage.REISSUE_DAEMONS, Act.REISSUE_DAEMON, "re-issue this daemon's "
                        "root client certificate from the new client CA", both)
        if old:
            names = ", ".join(d.daemon for d in old)
            return Next(Stage.REISSUE_DAEMONS, Act.WAIT, f"daemons {names} renew their root "
                        "client certificate from the new client CA (through the leader)",
                        both)
        # 5. the grace period for user certificates of the old CA.
        if not r.grace_until:
            return Next(Stage.GRACE, Act.START_GRACE, "user certificates of the old client "
                        f"CA keep working for {_span(facts.grace)}", both)
        if facts.now < r.grace_until:
            return Next(Stage.GRACE, Act.WAIT, "user certificates of the old client CA work "
                        f"for {_span(r.grace_until - facts.now)} more", both)
    # 6. the old CA leaves the bundles.
    new = frozenset({r.new})
    off = [m.name for m in facts.members if m.trusts != new]
    if off:
        return _roll(Stage.DROP_OLD, new, off, f"members restart one at a time onto a "
                     f"{r.role} trust bundle of the new CA alone")
    # 7. the new CA takes the old one's place.
    return Next(Stage.FINISH, Act.FINISH, f"every member trusts only the new {r.role} CA: "
                "it replaces the old one", new)


def _trusts_new(m: MemberTrust, r: Record) -> bool:
    """On old + new, or (a drop under way, a member restarted early) on new with a new
    certificate: either way it accepts both kinds of certificates still in use."""
    if m.trusts is None:
        return False
    return m.trusts == frozenset({r.old, r.new}) or (
        m.trusts == frozenset({r.new}) and m.cert_from == r.new)


def _roll(stage: Stage, trust: frozenset[str], off: Sequence[str], why: str) -> Next:
    return Next(stage, Act.ROLL, f"{why} (left: {', '.join(off)})", trust, waiting=tuple(off))


def _stage_of(facts: Facts) -> Stage:
    """The stage shown while the rotation waits for health: as far as the files say."""
    r = facts.record
    if not all(_trusts_new(m, r) or m.trusts == frozenset({r.new}) for m in facts.members):
        return Stage.TRUST_BOTH
    if any(m.cert_from != r.new for m in facts.members):
        return Stage.REISSUE_MEMBERS
    if r.role == CLIENT and any(d.cert_from != r.new for d in facts.daemons):
        return Stage.REISSUE_DAEMONS
    if r.role == CLIENT and (not r.grace_until or facts.now < r.grace_until):
        return Stage.GRACE
    return Stage.DROP_OLD


def _cert_name(role: str) -> str:
    return "peer certificate" if role == PEER else "server certificate"


def _span(seconds: float) -> str:
    return format_duration(dt.timedelta(seconds=max(0, int(seconds))))


def refusal(role: str, records: Sequence[Record], rolling: str, healthy: bool,
            has_key: bool, separate: bool) -> str:
    """Why `ca rotate --ROLE` may not start now ("" = it may): one rotation at a time, no
    rolling change under way, a healthy cluster, and a daemon host with the CA key."""
    if role not in ROLES:
        return f"--{role}: no such CA (peer or client)"
    busy = [r for r in records if not r.done]
    if busy:
        return (f"a {busy[0].role} CA rotation is under way: one rotation at a time "
                "(`ckeetcd status` shows its stage)")
    if rolling:
        return f"a rolling change is under way ({rolling}): rotate once it is done"
    if not healthy:
        return "the cluster is not healthy: a rotation restarts members, so it waits for health"
    if not has_key:
        return ("this host lacks the CA key (a `ca import --no-key` follower): run it on a "
                "daemon host that holds the key")
    if role == CLIENT and not separate:
        return ("this cluster has one CA for peers and clients: migrate to a separate peer "
                "CA first (`ckeetcd ca rotate --peer`)")
    return ""


def daemons_refusal(role: str, unseen: Sequence[str]) -> str:
    """Why `ca rotate --ROLE` may not start while the running daemons `unseen` publish no
    root certificate in their presence key ("" = it may): a client rotation finishes only
    once every running daemon shows a certificate of the new CA, and these (an older
    ckeetcd) never would; they would be locked out at drop-old."""
    if role != CLIENT or not unseen:
        return ""
    return (f"daemons {', '.join(sorted(unseen))} run but publish no root client "
            "certificate (an older ckeetcd?): the rotation could not see them renew from "
            "the new client CA, and they would be locked out at drop-old; upgrade or stop "
            "them first")

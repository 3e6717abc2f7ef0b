"""The CA rotation as a pure state machine: the step from each observed state (table),
the bundle names, the refusals, and walks to the end (each role, the one-CA migration)
that check at every state that every certificate in use is trusted where it is shown,
re-planned from the facts alone after every single action (a daemon killed anywhere)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import pytest

from ckeetcd.core.carotation import (
    CLIENT,
    PEER,
    Act,
    DaemonCert,
    Facts,
    MemberTrust,
    Record,
    Stage,
    next_step,
    refusal,
    signer_is_new,
    trust_file,
    trust_of,
    wanted_trust,
)

OLD, NEW = "0ld0ld0ld0ld0ld0", "4e44e44e44e44e44"
BOTH, ONLY_OLD, ONLY_NEW = frozenset({OLD, NEW}), frozenset({OLD}), frozenset({NEW})
NAMES = ("a", "b", "c")


def members(trusts: tuple[frozenset[str] | None, ...] = (ONLY_OLD,) * 3,
            certs: tuple[str, ...] = (OLD,) * 3,
            healthy: tuple[bool, ...] = (True,) * 3) -> tuple[MemberTrust, ...]:
    return tuple(MemberTrust(n, h, t, c) for n, t, c, h in zip(NAMES, trusts, certs, healthy,
                                                               strict=True))


def facts(role: str = PEER, *, new: str = NEW, new_ca: bool = True, ms: tuple[MemberTrust, ...]
          | None = None, daemons: tuple[DaemonCert, ...] = (), grace_until: float = 0.0,
          now: float = 1000.0, done: bool = False) -> Facts:
    record = Record(role=role, old=OLD, new=new, started=900.0, grace_until=grace_until,
                    done=done)
    return Facts(record, new_ca, ms if ms is not None else members(), daemons, now, 3600.0)


NEW_DAEMONS = (DaemonCert("d1", NEW, me=True), DaemonCert("d2", NEW))
ALL_NEW = members((BOTH,) * 3, (NEW,) * 3)


@pytest.mark.parametrize(("f", "stage", "act", "detail"), [
    (facts(new="", new_ca=False), Stage.NEW_CA, Act.MAKE_CA, ""),
    # killed after writing the new CA, before the record named it: made (loaded) again
    (facts(new="", new_ca=True), Stage.NEW_CA, Act.MAKE_CA, ""),
    (facts(), Stage.TRUST_BOTH, Act.ROLL, "a, b, c"),
    (facts(ms=members((BOTH, ONLY_OLD, ONLY_OLD))), Stage.TRUST_BOTH, Act.ROLL, "b, c"),
    # a member whose trust cannot be read counts as not there yet (it is restarted)
    (facts(ms=members((BOTH, None, BOTH))), Stage.TRUST_BOTH, Act.ROLL, "b"),
    (facts(ms=members((BOTH, BOTH, ONLY_OLD), healthy=(True, False, True))),
     Stage.TRUST_BOTH, Act.WAIT, "b not healthy"),
    (facts(ms=members((BOTH,) * 3)), Stage.REISSUE_MEMBERS, Act.REISSUE_MEMBER, "a"),
    (facts(ms=members((BOTH,) * 3, (NEW, OLD, OLD))), Stage.REISSUE_MEMBERS,
     Act.REISSUE_MEMBER, "b"),
    (facts(ms=members((BOTH,) * 3, (NEW, NEW, OLD), (True, True, False))),
     Stage.REISSUE_MEMBERS, Act.WAIT, "c not healthy"),
    # peer: no daemons, no grace: straight to dropping the old CA
    (facts(ms=ALL_NEW), Stage.DROP_OLD, Act.ROLL, "a, b, c"),
    (facts(ms=members((ONLY_NEW, ONLY_NEW, BOTH), (NEW,) * 3)), Stage.DROP_OLD, Act.ROLL, "c"),
    (facts(ms=members((ONLY_NEW,) * 3, (NEW,) * 3)), Stage.FINISH, Act.FINISH, ""),
    # client: daemons (this one itself, then the followers), then the grace period
    (facts(CLIENT, ms=ALL_NEW, daemons=(DaemonCert("d1", OLD, me=True), DaemonCert("d2", OLD))),
     Stage.REISSUE_DAEMONS, Act.REISSUE_DAEMON, ""),
    (facts(CLIENT, ms=ALL_NEW, daemons=(DaemonCert("d1", NEW, me=True), DaemonCert("d2", OLD))),
     Stage.REISSUE_DAEMONS, Act.WAIT, "d2"),
    (facts(CLIENT, ms=ALL_NEW, daemons=NEW_DAEMONS), Stage.GRACE, Act.START_GRACE, "1h0m0s"),
    (facts(CLIENT, ms=ALL_NEW, daemons=NEW_DAEMONS, grace_until=1060.0), Stage.GRACE, Act.WAIT,
     "1m0s more"),
    (facts(CLIENT, ms=ALL_NEW, daemons=NEW_DAEMONS, grace_until=1000.0), Stage.DROP_OLD,
     Act.ROLL, "a, b, c"),
    (facts(CLIENT, ms=members((ONLY_NEW,) * 3, (NEW,) * 3), daemons=NEW_DAEMONS,
           grace_until=10.0), Stage.FINISH, Act.FINISH, ""),
    # killed after the files were swapped, before the record said done: finish again
    (facts(CLIENT, ms=members((ONLY_NEW,) * 3, (NEW,) * 3), daemons=NEW_DAEMONS,
           grace_until=10.0, new_ca=True), Stage.FINISH, Act.FINISH, ""),
    (facts(done=True), Stage.DONE, Act.NONE, ""),
])
def test_next_step(f: Facts, stage: Stage, act: Act, detail: str) -> None:
    step = next_step(f)
    assert (step.stage, step.act) == (stage, act), step.reason
    if act == Act.REISSUE_MEMBER:
        assert step.member == detail
    elif act == Act.ROLL:
        assert step.waiting == tuple(detail.split(", "))
    else:
        assert detail in step.reason


@pytest.mark.parametrize(("f", "want"), [
    (facts(new="", new_ca=False), ONLY_OLD),
    (facts(), BOTH),
    (facts(ms=ALL_NEW), ONLY_NEW),  # peer: nothing of the old CA in use any more
    (facts(CLIENT, ms=ALL_NEW, daemons=NEW_DAEMONS), BOTH),  # the grace not begun
    (facts(CLIENT, ms=ALL_NEW, daemons=NEW_DAEMONS, grace_until=2000.0), BOTH),
    (facts(CLIENT, ms=ALL_NEW, daemons=(DaemonCert("d2", OLD),), grace_until=10.0), BOTH),
    (facts(CLIENT, ms=ALL_NEW, daemons=NEW_DAEMONS, grace_until=10.0), ONLY_NEW),
    (facts(done=True), ONLY_NEW),
])
def test_wanted_trust(f: Facts, want: frozenset[str]) -> None:
    assert wanted_trust(f) == want


@pytest.mark.parametrize(("trusts", "new"), [
    ((ONLY_OLD, BOTH, BOTH), False), ((BOTH,) * 3, True), ((BOTH, None, BOTH), False),
    ((ONLY_NEW, BOTH, BOTH), True),
])
def test_signer_is_new_only_once_every_member_trusts_the_new_ca(
        trusts: tuple[frozenset[str] | None, ...], new: bool) -> None:
    assert signer_is_new(facts(ms=members(trusts))) is new


def test_trust_files_are_named_by_content_and_read_back() -> None:
    r = Record(PEER, OLD, NEW)
    assert trust_file(PEER, [OLD, NEW]) == trust_file(PEER, [NEW, OLD])
    names = {trust_file(role, s) for role in (PEER, CLIENT) for s in (ONLY_OLD, BOTH, ONLY_NEW)}
    assert len(names) == 6
    for s in (ONLY_OLD, BOTH, ONLY_NEW):
        assert trust_of(PEER, trust_file(PEER, s), r) == s
    assert trust_of(PEER, "peer-ca.crt", r) == ONLY_OLD  # never rotated: the old CA
    assert trust_of(PEER, "ca.crt", r) is None  # a one-CA name, but not a migration
    assert trust_of(PEER, "ca.crt", replace(r, migration=True)) == ONLY_OLD
    assert trust_of(CLIENT, "ca.crt", Record(CLIENT, OLD, NEW)) == ONLY_OLD
    assert trust_of(PEER, trust_file(CLIENT, BOTH), r) is None  # another role's bundle
    assert trust_of(PEER, "peer-ca.crt", None) is None
    assert trust_of(PEER, trust_file(PEER, ONLY_OLD), Record(PEER, OLD)) == ONLY_OLD
    # the second rotation reads the first one's final bundle as its "old"
    second = Record(PEER, NEW, "5ec0nd5ec0nd5ec0")
    assert trust_of(PEER, trust_file(PEER, ONLY_NEW), second) == ONLY_NEW


@pytest.mark.parametrize(("args", "says"), [
    ((PEER, [], "", True, True, False), ""),  # the one-CA migration
    ((CLIENT, [], "", True, True, True), ""),
    ((PEER, [Record(PEER, OLD, NEW, done=True)], "", True, True, True), ""),
    (("server", [], "", True, True, True), "no such CA"),
    ((CLIENT, [Record(PEER, OLD, NEW)], "", True, True, True), "peer CA rotation is under way"),
    ((PEER, [], "a: etcd 3.5.1 -> 3.5.30", True, True, True), "rolling change is under way"),
    ((PEER, [], "", False, True, True), "not healthy"),
    ((PEER, [], "", True, False, True), "lacks the CA key"),
    ((CLIENT, [], "", True, True, False), "migrate to a separate peer CA first"),
])
def test_refusal(args: tuple[str, list[Record], str, bool, bool, bool], says: str) -> None:
    why = refusal(*args)
    assert (says in why) if says else why == ""


@pytest.mark.parametrize(("role", "unseen", "says"), [
    (CLIENT, [], ""),  # other daemons run, each publishing its root certificate
    (PEER, ["d2"], ""),  # a peer rotation touches no daemon certificate
    (CLIENT, ["d3", "d2"], "daemons d2, d3 run but publish no root client certificate"),
])
def test_a_client_rotation_is_refused_only_while_a_daemon_runs_unseen(
        role: str, unseen: list[str], says: str) -> None:
    from ckeetcd.core.carotation import daemons_refusal

    why = daemons_refusal(role, unseen)
    assert (says in why) if says else why == "", why


@pytest.mark.parametrize(("f", "stage"), [
    (facts(new_ca=False), Stage.TRUST_BOTH),
    (facts(new_ca=False, ms=members((BOTH,) * 3)), Stage.REISSUE_MEMBERS),
    (facts(new_ca=False, ms=ALL_NEW), Stage.DROP_OLD),
    (facts(new_ca=False, ms=members((ONLY_NEW,) * 3, (NEW,) * 3)), Stage.FINISH),
    (facts(CLIENT, new_ca=False, ms=ALL_NEW, daemons=(DaemonCert("d1", OLD, me=True),)),
     Stage.REISSUE_DAEMONS),
    (facts(CLIENT, new_ca=False, ms=ALL_NEW, daemons=NEW_DAEMONS), Stage.GRACE),
])
def test_without_the_new_cas_key_every_step_is_held_at_its_stage(f: Facts, stage: Stage) -> None:
    """A daemon the new CA was not copied to (a new leader after a kill, a follower)
    sees the stage from the public record and holds, naming what to copy."""
    step = next_step(f)
    assert (step.stage, step.act) == (stage, Act.WAIT), step.reason
    assert "pki/next-" in step.reason and "ckeetcd ca export" in step.reason
    assert "ckeetcd ca import" in step.reason
    # what members must trust does not depend on where the key is: a member restarted
    # by a repair meanwhile starts on the same bundle as with the key
    assert wanted_trust(f) == wanted_trust(replace(f, new_ca=True))
    assert signer_is_new(f) == signer_is_new(replace(f, new_ca=True))


def test_a_named_new_ca_is_never_made_again() -> None:
    """The record names a new CA that is not here: hold, never a second CA."""
    assert next_step(facts(new_ca=False)).act == Act.WAIT
    assert next_step(facts(new="", new_ca=False)).act == Act.MAKE_CA



# ---- walks to the end ------------------------------------------------------------------
@dataclass
class World:
    """What the rotation's actions change, and nothing else; `facts()` is all a (re)started
    daemon sees."""

    role: str
    old: str = OLD
    record_new: str = ""
    ca_files: bool = False
    trusts: dict[str, frozenset[str]] = field(
        default_factory=lambda: dict.fromkeys(NAMES, ONLY_OLD))
    certs: dict[str, str] = field(default_factory=lambda: dict.fromkeys(NAMES, OLD))
    daemons: dict[str, str] = field(default_factory=lambda: {"d1": OLD, "d2": OLD})
    users: list[str] = field(default_factory=lambda: [OLD])  # user certs handed out
    grace_until: float = 0.0
    now: float = 0.0
    done: bool = False
    migration: bool = False

    def facts(self) -> Facts:
        daemons = tuple(DaemonCert(d, c, me=d == "d1") for d, c in self.daemons.items()) \
            if self.role == CLIENT else ()
        record = Record(self.role, self.old, self.record_new, 0.0, self.grace_until,
                        self.migration, self.done)
        return Facts(record, self.ca_files, tuple(
            MemberTrust(n, True, self.trusts[n], self.certs[n]) for n in NAMES),
            daemons, self.now, 600.0)

    def apply(self, half: bool = False) -> None:
        """One action; `half`: the daemon is killed inside it (the part a crash leaves)."""
        step = next_step(self.facts())
        if step.act == Act.MAKE_CA:
            self.ca_files = True
            if not half:
                self.record_new = NEW
        elif step.act == Act.ROLL:
            self.trusts[step.waiting[0]] = step.trust  # one member per restart
        elif step.act == Act.REISSUE_MEMBER:
            self.certs[step.member] = NEW
        elif step.act == Act.REISSUE_DAEMON:
            self.daemons["d1"] = NEW
        elif step.act == Act.WAIT and step.stage == Stage.REISSUE_DAEMONS:
            self.daemons["d2"] = NEW  # the follower renews through the leader
        elif step.act == Act.START_GRACE:
            self.grace_until = self.now + 600.0
        elif step.act == Act.WAIT and step.stage == Stage.GRACE:
            self.now += 300.0
        elif step.act == Act.FINISH:
            self.done = not half
        else:
            raise AssertionError(f"stuck: {step}")
        if signer_is_new(self.facts()):
            self.users.append(NEW)  # `ckecli etcd issue` now signs with the new CA

    def check(self) -> None:
        """Every certificate in use passes where it is shown (the no-downtime rule)."""
        in_use = set(self.certs.values())
        if self.role == CLIENT:
            in_use |= set(self.daemons.values())
            if not self.grace_until or self.now < self.grace_until:
                in_use |= set(self.users)  # old user certificates work through the grace
            else:
                in_use |= {u for u in self.users if u == NEW}
        for n in NAMES:
            assert in_use <= self.trusts[n], (n, self.trusts[n], in_use)


def walk(w: World, crash_at: int | None = None) -> list[Stage]:
    stages = []
    for i in itertools.count():
        assert i < 60, "no convergence"
        step = next_step(w.facts())
        if step.act == Act.NONE:
            return stages
        if not stages or stages[-1] != step.stage:
            stages.append(step.stage)
        w.apply(half=i == crash_at)
        w.check()
    return stages


PEER_STAGES = [Stage.NEW_CA, Stage.TRUST_BOTH, Stage.REISSUE_MEMBERS, Stage.DROP_OLD,
               Stage.FINISH]
CLIENT_STAGES = [*PEER_STAGES[:3], Stage.REISSUE_DAEMONS, Stage.GRACE, *PEER_STAGES[3:]]


@pytest.mark.parametrize(("role", "stages"), [(PEER, PEER_STAGES), (CLIENT, CLIENT_STAGES)])
def test_a_rotation_walks_every_stage_with_every_certificate_trusted(
        role: str, stages: list[Stage]) -> None:
    w = World(role)
    assert walk(w) == stages
    assert w.done and set(w.trusts.values()) == {ONLY_NEW} and set(w.certs.values()) == {NEW}
    if role == CLIENT:
        assert set(w.daemons.values()) == {NEW} and w.users[-1] == NEW
        assert w.now >= w.grace_until > 0  # old user certs were refused only after it


@pytest.mark.parametrize("role", [PEER, CLIENT])
@pytest.mark.parametrize("crash_at", range(22))
def test_a_daemon_killed_inside_any_step_converges(role: str, crash_at: int) -> None:
    w = World(role)
    walk(w, crash_at=crash_at)
    assert w.done and set(w.trusts.values()) == {ONLY_NEW}


def test_the_one_ca_migration_is_a_peer_rotation_from_the_shared_ca() -> None:
    """Old = the client CA every peer trusts through ca.crt; the end: peer-ca alone."""
    w = World(PEER, migration=True)
    record = w.facts().record
    assert trust_of(PEER, "ca.crt", record) == ONLY_OLD  # the one-CA peers' flag
    assert walk(w) == PEER_STAGES
    assert set(w.trusts.values()) == {ONLY_NEW}

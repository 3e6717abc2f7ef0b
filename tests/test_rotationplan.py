"""The peer CA rotation in the plan (pure, builders): which op each stage becomes, the
restart order of a trust change (followers first, the leader last after move-leader),
the legacy trust names of a never-rotated cluster, and no step while a member is sick."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from ckeetcd.core.carotation import PEER, Record, RotationSeen, trust_file
from ckeetcd.core.model import Observed
from ckeetcd.core.planner import plan
from ckeetcd.core.rotationplan import role_facts, trust_name
from tests.builders import cluster, desired

NAMES = ["a", "b", "c"]  # "a" leads (builders)
D = desired(NAMES)
OLD, NEW = "0ld0ld0ld0ld0ld0", "4e44e44e44e44e44"
RECORD = Record(PEER, OLD, NEW, migration=True)
BOTH = trust_file(PEER, {OLD, NEW})


def rotating(trusts: dict[str, str], certs: dict[str, str], *, new_ca: bool = True,
             record: Record = RECORD, dead: tuple[str, ...] = ()) -> Observed:
    o = cluster(NAMES, dead=dead)
    rts = {n: replace(r, trust_files=((PEER, trusts.get(n, "ca.crt")),))
           for n, r in o.runtimes.items()}
    seen = RotationSeen(records=(record,), cert_from=tuple(
        (n, ((PEER, certs.get(n, OLD)),)) for n in NAMES),
        new_ca=frozenset({PEER}) if new_ca else frozenset(), now=1000.0)
    return replace(o, runtimes=MappingProxyType(rts), rotation=seen)


def ops(o: Observed) -> list[tuple[str, str]]:
    return [(op.kind, op.targets()) for op in plan(D, o).ops]


def test_each_stage_becomes_its_op() -> None:
    assert ops(rotating({}, {}, new_ca=False, record=replace(RECORD, new=""))) == [
        ("rotate-ca", "peer:make-ca")]
    # the record names a new CA whose key is not here: nothing is done, the plan says why
    held = plan(D, rotating({}, {}, new_ca=False))
    assert (held.phase, held.ops) == ("ca-rotation", ())
    assert "key is not on this host" in held.reason and "ckeetcd ca import" in held.reason
    # trust old + new: a follower first, stopped after a snapshot named by the bundle
    d = plan(D, rotating({}, {}))
    assert d.phase == "ca-rotation"
    assert [(op.kind, op.member) for op in d.ops] == [("stop-member", "b"),
                                                      ("restart-member", "b")]
    assert d.ops[0].snapshot_tag == BOTH  # type: ignore[attr-defined]
    # the leader last, after leadership moved to a member already on the bundle
    assert ops(rotating({"b": BOTH, "c": BOTH}, {})) == [("move-leader", "b")]
    all_both = dict.fromkeys(NAMES, BOTH)
    assert ops(rotating(all_both, {})) == [("renew-member-certs", "a")]
    assert plan(D, rotating(all_both, {})).ops[0].rotate == PEER  # type: ignore[attr-defined]
    new_certs = dict.fromkeys(NAMES, NEW)
    only_new = trust_file(PEER, {NEW})
    assert ops(rotating(all_both, new_certs))[0] == ("stop-member", "b")
    assert ops(rotating(dict.fromkeys(NAMES, only_new), new_certs)) == [
        ("rotate-ca", "peer:finish")]
    assert ops(rotating(dict.fromkeys(NAMES, only_new), new_certs,
                        record=replace(RECORD, done=True))) == []


def test_no_rotation_step_while_a_member_is_down() -> None:
    d = plan(D, rotating({}, {}, dead=("c",)))
    assert all(op.kind != "rotate-ca" and op.kind != "stop-member" for op in d.ops), d


def test_trust_names_of_a_cluster_never_rotated_are_the_old_ones() -> None:
    o = cluster(NAMES)
    assert role_facts(PEER, D, o) is None
    assert trust_name(PEER, None, separate=True) == "peer-ca.crt"
    assert trust_name(PEER, None, separate=False) == "ca.crt"
    f = role_facts(PEER, D, rotating({}, {}))
    assert f is not None and trust_name(PEER, f, separate=False) == BOTH


def client_rotating(certs: str, daemon: str, grace_until: float) -> Observed:
    """Every member on the old + new client bundle, their server certs from `certs`,
    this daemon's root certificate from `daemon`; the observer's clock at 1000."""
    from ckeetcd.core.carotation import CLIENT, DaemonCert

    both = trust_file(CLIENT, {OLD, NEW})
    o = cluster(NAMES)
    rts = {n: replace(r, trust_files=((CLIENT, both),)) for n, r in o.runtimes.items()}
    seen = RotationSeen(records=(Record(CLIENT, OLD, NEW, grace_until=grace_until),),
                        cert_from=tuple((n, ((CLIENT, certs),)) for n in NAMES),
                        daemons=(DaemonCert("this daemon", daemon, me=True),),
                        new_ca=frozenset({CLIENT}), now=1000.0)
    return replace(o, runtimes=MappingProxyType(rts), rotation=seen)


def test_client_rotation_daemon_cert_then_grace_then_drop_old() -> None:
    from ckeetcd.core.rotationplan import rotation_lines, rotation_view

    assert ops(client_rotating(OLD, OLD, 0)) == [("renew-member-certs", "a")]
    assert ops(client_rotating(NEW, OLD, 0)) == [("rotate-ca", "client:reissue-daemon")]
    assert ops(client_rotating(NEW, NEW, 0)) == [("rotate-ca", "client:start-grace")]
    waiting = client_rotating(NEW, NEW, 1030.0)
    d = plan(D, waiting)
    assert (d.phase, d.ops) == ("ca-rotation", ()) and "30s more" in d.reason, d
    lines = rotation_lines(rotation_view(D, waiting))
    assert "rotation: user certificates of the old client CA accepted until 1970-01-01 " \
        "00:17:10 UTC (the grace period)" in lines, lines
    assert any("pki/client-bundle.crt" in line for line in lines), lines
    assert ops(client_rotating(NEW, NEW, 999.0))[0] == ("stop-member", "b")  # drop-old

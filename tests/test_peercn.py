"""`--peer-cert-allowed-cn`: when a member may get it (table), how an old cluster moves
onto it in the plan (certificates first, then one member at a time), and the peer
certificates that carry the shared CN."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest
from cryptography import x509

from ckeetcd.core.model import Observed, Runtime
from ckeetcd.core.peercn import (
    MEMBER_URI,
    PEER_CN,
    PeerSide,
    blockers,
    change_line,
    due,
    start_flag,
)
from ckeetcd.core.planner import plan
from ckeetcd.nodes import MemberSpec, member_flags
from ckeetcd.nodes.fingerprint import allowed_cn
from ckeetcd.pki import CA, create_ca, member_tls_files, member_tls_problem
from tests.builders import cluster, desired, mid

OLD = "m1"  # the CN an older ckeetcd gave m1's peer certificate: its name


def side(name: str, cn: str | None = PEER_CN, running: bool = True,
         flag: str | None = "") -> PeerSide:
    return PeerSide(name, running, cn, flag if running else None)


@pytest.mark.parametrize(("members", "starting", "why"), [
    # a new cluster: nobody runs, no certificate yet: every start gets the flag
    ([side("a", "", False), side("b", "", False), side("c", "", False)], "a", []),
    ([side("a"), side("b"), side("c")], "a", []),
    # the member being started is not asked about: its own certificate is issued first
    ([side("a", OLD), side("b"), side("c")], "a", []),
    ([side("a", OLD), side("b"), side("c")], "b", ["a: its peer certificate carries CN 'm1'"]),
    # an old certificate on a stopped member still blocks: it may come back with it
    ([side("a", OLD, False), side("b")], "b", ["a: its peer certificate carries CN 'm1'"]),
    ([side("a", None), side("b")], "b", ["a: its peer certificate is not known"]),
    ([side("a", ""), side("b")], "b", ["a: runs without a peer certificate"]),
])
def test_who_blocks_the_flag(members: list[PeerSide], starting: str, why: list[str]) -> None:
    assert blockers(members, starting) == why


@pytest.mark.parametrize(("members", "restart"), [
    ([side("a"), side("b"), side("c")], ("a", "b", "c")),
    ([side("a", flag=PEER_CN), side("b"), side("c", flag=None)], ("b", "c")),
    ([side("a", flag=PEER_CN), side("b", flag=PEER_CN)], ()),
    ([side("a", flag="other"), side("b", flag=PEER_CN)], ("a",)),
    # one old certificate anywhere: no restart onto the flag at all
    ([side("a"), side("b", OLD), side("c")], ()),
    ([side("a"), side("b", None), side("c")], ()),
    # a member not running is not restarted; it gets the flag when it starts
    ([side("a"), side("b", "", running=False)], ("a",)),
])
def test_who_moves_onto_the_flag(members: list[PeerSide], restart: tuple[str, ...]) -> None:
    assert due(members) == restart


def test_a_recorded_command_line_says_the_flag() -> None:
    assert allowed_cn(["etcd", "--name=a", f"--peer-cert-allowed-cn={PEER_CN}"]) == PEER_CN
    assert allowed_cn(["etcd", "--name=a"]) == ""
    assert allowed_cn(None) is None and allowed_cn(["etcd"]) is None


NAMES = ["a", "b", "c"]
D = desired(NAMES)


def seen(cns: dict[str, str | None], flags: dict[str, str | None],
         leader: str = "a") -> Observed:
    """Three healthy members with these peer certificate CNs and recorded flags."""
    o = cluster(NAMES)
    health = {i: replace(h, version="3.5.30", raft_applied_index=100, leader_id=mid(leader))
              for i, h in o.health.items()}
    rts = {n: replace(r, wanted_version="3.5.30", peer_cert_cn=cns.get(n, PEER_CN),
                      allowed_cn=flags.get(n, "")) for n, r in o.runtimes.items()}
    return replace(o, health=MappingProxyType(health), runtimes=MappingProxyType(rts))


def test_an_old_cluster_renews_first_then_rolls_onto_the_flag_the_leader_last() -> None:
    """Certificates with the members' names: renewed in place one member per cycle (no
    restart, no flag); then each member restarts onto the flag once, followers first."""
    cns: dict[str, str | None] = dict.fromkeys(NAMES, "x")
    flags: dict[str, str | None] = dict.fromkeys(NAMES, "")
    steps: list[tuple[str, str]] = []
    leader = "a"
    for _ in range(20):
        o = seen(cns, flags, leader)
        problems = {n: "peer certificate lacks the shared CN" for n in NAMES if cns[n] != PEER_CN}
        o = replace(o, runtimes=MappingProxyType({
            n: replace(r, tls_problem=problems.get(n, "")) for n, r in o.runtimes.items()}))
        dec = plan(D, o)
        if dec.phase == "steady":
            break
        op = dec.ops[0]
        steps.append((op.kind, op.member))
        if op.kind == "renew-member-certs":
            assert not any(f == PEER_CN for f in flags.values())
            cns[op.member] = PEER_CN
        elif op.kind == "move-leader":
            leader = op.member
        else:
            assert dec.phase == "rolling" and change_line() in dec.reason, dec
            assert all(c == PEER_CN for c in cns.values())  # never before every renewal
            assert [k.kind for k in dec.ops] == ["stop-member", "restart-member"]
            assert start_flag(D, o, op.member) == PEER_CN
            flags[op.member] = PEER_CN
    assert steps == [("renew-member-certs", "a"), ("renew-member-certs", "b"),
                     ("renew-member-certs", "c"), ("stop-member", "b"), ("stop-member", "c"),
                     ("move-leader", "b"), ("stop-member", "a")]


def test_a_start_while_a_peer_has_an_old_certificate_gets_no_flag() -> None:
    o = seen({"c": "c"}, {})
    assert start_flag(D, o, "a") == "" and start_flag(D, o, "c") == PEER_CN
    assert [op.kind for op in plan(D, o).ops] == []  # nothing rolls onto it either
    unknown = replace(o, runtimes=MappingProxyType({**o.runtimes, "c": Runtime(
        reachable=False)}))
    assert start_flag(D, unknown, "a") == ""


def test_with_rolling_changes_off_no_member_is_restarted_for_the_flag() -> None:
    assert plan(replace(D, rolling_changes=False), seen({}, {})).phase == "steady"


def test_a_bootstrap_starts_every_member_with_the_flag() -> None:
    o = cluster(not_formed=True, idle=NAMES)
    o = replace(o, runtimes=MappingProxyType({n: replace(r, peer_cert_cn="")
                                              for n, r in o.runtimes.items()}))
    assert all(start_flag(D, o, n) == PEER_CN for n in NAMES)


def test_the_flag_goes_on_the_command_line_only_when_given(tmp_path: Path) -> None:
    from ckeetcd.core.config import EtcdConfig

    spec = MemberSpec(name="a", client_url="u", peer_url="p", cluster_token="t",
                      initial_cluster=(), initial_state="new")
    flags = member_flags(spec, tmp_path, tmp_path, EtcdConfig())
    assert not any(f.startswith("--peer-cert-allowed-cn") for f in flags)
    flags = member_flags(replace(spec, peer_allowed_cn=PEER_CN), tmp_path, tmp_path,
                         EtcdConfig())
    assert f"--peer-cert-allowed-cn={PEER_CN}" in flags


@pytest.fixture
def cas(tmp_path: Path) -> tuple[CA, CA]:
    return create_ca(tmp_path / "c", "t"), create_ca(tmp_path / "p", "t", role="peer")


def test_peer_certificates_carry_the_shared_cn_and_the_name_in_a_uri(
        cas: tuple[CA, CA]) -> None:
    client, peer = cas
    files = member_tls_files(client, "node_1.x", "10.0.0.1", peer_ca=peer)
    cert = x509.load_pem_x509_certificate(files["peer.crt"])
    assert cert.subject.rfc4514_string() == f"CN={PEER_CN}"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [MEMBER_URI + "node_1.x"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    server = x509.load_pem_x509_certificate(files["server.crt"])
    assert server.subject.rfc4514_string() == "CN=node_1.x"  # clients see the name


def test_a_peer_certificate_with_the_members_name_is_renewed(cas: tuple[CA, CA]) -> None:
    client, peer = cas
    now = dt.datetime.now(dt.timezone.utc)
    for cn, problem in ((PEER_CN, ""), ("a", f"peer certificate lacks the shared CN {PEER_CN}")):
        files: dict[str, bytes | None] = dict(member_tls_files(
            client, "a", "10.0.0.1", peer_ca=peer, peer_cn=cn))
        assert member_tls_problem(files, client.cert_pem, "10.0.0.1", ("localhost",),
                                  dt.timedelta(days=1), now,
                                  peer_ca_pem=peer.cert_pem) == problem


def test_no_user_name_can_be_the_peer_cn() -> None:
    """`ckecli etcd issue` and [[users]] take NAME_RE names only: no user certificate
    can carry the peers' CN, even where one CA signs peers and users."""
    from ckeetcd.core.config import NAME_RE

    assert NAME_RE.fullmatch(PEER_CN) is None

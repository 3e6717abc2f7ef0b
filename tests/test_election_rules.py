"""Which ops a daemon that does not lead may still run (pure: no etcd)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckeetcd.coordination import presence as presence_module
from ckeetcd.coordination.election import Leadership, members_of_this_host
from ckeetcd.coordination.presence import Membership, Presence, hold_membership_changes
from ckeetcd.core.config import Config, load_config
from ckeetcd.core.decide import decide
from ckeetcd.core.model import Decision, Observed, Op
from tests.builders import cluster, desired
from tests.harness import ListLog

M3 = ["m1", "m2", "m3"]


def config(tmp_path: Path, daemon: str, addresses: dict[str, str]) -> Config:
    members = "".join(f'[[members]]\nname = "{n}"\naddress = "{a}"\nruntime = "ssh"\n\n'
                      for n, a in addresses.items())
    path = tmp_path / "ckeetcd.toml"
    path.write_text(f'[cluster]\nname = "c"\nstate_dir = "state"\n\n[daemon]\nid = "{daemon}"\n'
                    f'election = true\n\n[ssh]\nidentity_file = "id"\n'
                    f'known_hosts = "kh"\n\n{members}')
    return load_config(path)


def test_members_of_this_host_are_those_whose_address_binds(tmp_path: Path) -> None:
    # 127.0.0.1 is on every host; 192.0.2.1 (TEST-NET-1) is on none.
    cfg = config(tmp_path, "m2", {"m1": "192.0.2.1", "m2": "127.0.0.1", "m3": "192.0.2.3"})
    assert members_of_this_host(cfg) == {"m2"}


def follower_ops(tmp_path: Path, observed: Observed, own: str = "m2") -> list[tuple[str, str]]:
    """The ops the daemon of `own`'s node (not the bootstrapper m1) may run."""
    addresses = {n: "127.0.0.1" if n == own else f"192.0.2.{i}" for i, n in enumerate(M3, 1)}
    leadership = Leadership(config(tmp_path, own, addresses), pool=None, log=ListLog())
    decision = leadership.filter(observed, decide(desired(M3), observed))
    assert leadership.role == "follower"
    return [(op.kind, op.member) for op in decision.ops]


@pytest.mark.parametrize("what, observed, allowed", [
    ("no quorum, own member stopped -> restart it",
     cluster(M3, dead=["m2", "m3"]), [("restart-member", "m2")]),
    ("nobody answers, all stopped -> restart only its own",
     cluster(no_member_list=True, dead=M3), [("restart-member", "m2")]),
    ("no quorum, another node's member stopped -> leave it to the bootstrapper",
     cluster(M3, dead=["m1", "m3"]), []),
    ("quorum holds, own member stopped -> the leader restarts it",
     cluster(M3, dead=["m2"]), []),
    ("quorum holds, own member wiped -> no remove/add by a follower",
     cluster(M3, wiped=["m2"]), []),
])
def test_a_follower_only_restarts_its_own_member_without_quorum(
        tmp_path: Path, what: str, observed: Observed, allowed: list[tuple[str, str]]) -> None:
    assert follower_ops(tmp_path, observed) == allowed, what


SWAP_OPS = ("stop-member", "remove-member", "add-member", "start-member", "promote-member")
OLD: Membership = (("h1", "https://10.0.0.1:2380"), ("h2", "https://10.0.0.2:2380"),
                   ("h3", "https://10.0.0.3:2380"))
NEW: Membership = (("h1", "https://10.0.0.1:2380"), ("h2", "https://10.0.0.2:2380"),
                   ("h4", "https://10.0.0.4:2380"))


def decision_of(*kinds: str) -> Decision:
    return Decision("member-remove", tuple(Op(k, member="h3") for k in kinds), "swap h3 for h4")


@pytest.mark.parametrize("what, decision, peers, kinds, phase", [
    ("every live daemon agrees -> the swap goes on",
     decision_of(*SWAP_OPS), {"h1": NEW, "h2": NEW}, list(SWAP_OPS), "member-remove"),
    ("one daemon still lists h3 -> held",
     decision_of("stop-member", "remove-member"), {"h1": NEW, "h2": OLD}, [], "config-drift"),
    ("held, but the traffic cut and a restart still run",
     decision_of("stop-apiserver-traffic", "restart-member", "add-member"),
     {"h1": NEW, "h2": OLD}, ["stop-apiserver-traffic", "restart-member"], "config-drift"),
    ("the others not read yet in this term -> held",
     decision_of("promote-member"), None, [], "config-drift"),
    ("no membership op -> nothing to hold, whatever the others say",
     decision_of("renew-member-certs"), {"h2": OLD}, ["renew-member-certs"], "member-remove"),
])
def test_membership_changes_wait_for_every_live_daemons_config(
        what: str, decision: Decision, peers: dict[str, Membership] | None,
        kinds: list[str], phase: str) -> None:
    held = hold_membership_changes(decision, NEW, peers)
    assert [op.kind for op in held.ops] == kinds, what
    assert held.phase == phase, what
    if phase == "config-drift" and peers:
        assert "daemons h2 ask for other members" in held.reason


def test_drift_is_reported_only_when_it_outlasts_a_rollout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(presence_module.time, "monotonic", lambda: clock[0])
    log = ListLog()
    p = Presence("h1", log)
    p.peers = {"h1": NEW, "h2": OLD}  # h2 has not reloaded yet
    p._log_drift(NEW)
    clock[0] += 1
    p.peers = {"h1": NEW, "h2": NEW}  # ... now it has: nothing to say
    p._log_drift(NEW)
    assert log.names() == []
    p.peers = {"h1": NEW, "h2": NEW, "h3": OLD}  # h3 never follows
    p._log_drift(NEW)
    clock[0] += presence_module.DRIFT_GRACE
    p._log_drift(NEW)
    p._log_drift(NEW)
    assert log.names() == ["config_drift"]
    assert log.events[0]["others"] == {"h3": ["h1", "h2", "h3"]}
    p.peers = {"h1": NEW, "h2": NEW, "h3": NEW}
    p._log_drift(NEW)
    assert log.names() == ["config_drift", "config_agreed"]


def test_ckeetcds_own_keys_all_live_under_the_reserved_prefix() -> None:
    from ckeetcd.coordination import presence
    from ckeetcd.coordination.election import LEADER_KEY
    from ckeetcd.core.keyspace import CKEETCD_PREFIX
    from ckeetcd.tasks import daemoncert

    for key in (LEADER_KEY, presence.PREFIX, daemoncert.CSR_PREFIX, daemoncert.CERT_PREFIX):
        assert key.startswith(CKEETCD_PREFIX.encode()), key

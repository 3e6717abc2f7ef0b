"""The peer CA decision (pure table) and the expiry view (files in a temp dir)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ckeetcd.pki import (
    CA_CREATE,
    CA_FINISH,
    CA_FOLLOW,
    CA_LOAD,
    PEER_CERT_MISSING,
    PEER_CREATE,
    PEER_ELSEWHERE,
    PEER_FINISH,
    PEER_FOLLOW,
    PEER_KEY_MISSING,
    PEER_LOAD,
    PEER_ONE_CA,
    PeerFacts,
    create_ca,
    peer_ca_action,
)
from ckeetcd.pki.expiry import CA_WARN_BEFORE, trust_view
from ckeetcd.support.files import write_atomic

F, T = False, True

# (peer cert, peer key, client action, bootstrapper, cluster exists, members serve a peer CA)
TABLE = [
    # a true first start: both CAs are made
    ((F, F, CA_CREATE, T, F, F), PEER_CREATE),
    ((F, F, CA_FINISH, T, F, F), PEER_CREATE),
    # the client CA was made, the daemon stopped before the peer CA: finish the first start
    ((F, F, CA_LOAD, T, F, F), PEER_CREATE),
    ((F, T, CA_LOAD, T, F, F), PEER_FINISH),
    # a cluster made before the peer CA: one CA, never a new peer CA under running members
    ((F, F, CA_LOAD, T, T, F), PEER_ONE_CA),
    ((F, F, CA_LOAD, F, F, F), PEER_ONE_CA),  # not the bootstrapper: never makes one
    # ... unless its members show a peer CA this host lacks (an old bundle imported)
    ((F, F, CA_LOAD, T, T, T), PEER_ELSEWHERE),
    ((F, F, CA_FOLLOW, F, T, T), PEER_ELSEWHERE),
    # loaded, or followed without keys
    ((T, T, CA_LOAD, T, T, F), PEER_LOAD),
    ((T, T, CA_LOAD, F, T, F), PEER_LOAD),
    ((T, F, CA_FOLLOW, F, T, F), PEER_FOLLOW),
    ((F, F, CA_FOLLOW, F, T, F), PEER_ONE_CA),
    # losses are reported, never repaired by a new CA
    ((T, F, CA_LOAD, T, T, F), PEER_KEY_MISSING),
    ((T, F, CA_LOAD, T, F, F), PEER_KEY_MISSING),
    ((F, T, CA_LOAD, T, T, F), PEER_CERT_MISSING),
    ((F, T, CA_LOAD, F, F, F), PEER_CERT_MISSING),
]


@pytest.mark.parametrize(("facts", "want"), TABLE)
def test_peer_ca_action(facts: tuple[bool, bool, str, bool, bool, bool], want: str) -> None:
    cert, key, client, boot, cluster, served = facts
    f = PeerFacts(cert=cert, key=key, client_action=client, bootstrapper=boot, cluster=cluster,
                  served=served)
    assert peer_ca_action(f) == want


@pytest.mark.parametrize("client", [CA_LOAD, CA_FOLLOW])
def test_a_migration_under_way_keeps_one_ca_while_members_show_the_new_peer_ca(
        client: str) -> None:
    """A daemon restarted mid-migration (ca rotate --peer on a one-CA cluster): members
    already serve the new peer CA, which the rotation holds in next-peer/, not an import
    this host missed."""
    f = PeerFacts(cert=False, key=False, client_action=client, bootstrapper=True,
                  cluster=True, served=True, rotating=True)
    assert peer_ca_action(f) == PEER_ONE_CA


def test_a_peer_ca_is_never_made_where_a_cluster_exists() -> None:
    """Over every combination: CREATE/FINISH only on a first start by the bootstrapper."""
    for cert in (F, T):
        for key in (F, T):
            for client in (CA_CREATE, CA_FINISH, CA_LOAD, CA_FOLLOW):
                for boot in (F, T):
                    for served in (F, T):
                        f = PeerFacts(cert, key, client, boot, cluster=True, served=served)
                        made = peer_ca_action(f) in (PEER_CREATE, PEER_FINISH)
                        assert not made or client in (CA_CREATE, CA_FINISH), f


def test_trust_view_reads_the_files_and_warns_ahead(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ca = create_ca(pki, "t")
    now = dt.datetime.now(dt.timezone.utc)
    daemon = pki / "daemon-root.crt"
    write_atomic(daemon, ca.issue("root", dt.timedelta(days=90)).cert_pem)
    view = trust_view(pki, daemon, {"m1": (now + dt.timedelta(days=300)).timestamp()},
                      member_warn=dt.timedelta(days=15), daemon_warn=dt.timedelta(days=15),
                      now=now)
    assert view["layout"] == "one-ca" and list(view["cas"]) == ["client"]
    assert view["cas"]["client"]["expiring"] is False and view["warnings"] == []
    assert view["member_certificates"]["m1"]["expiring"] is False

    # a peer CA within its warning window, a member certificate past its renewal
    soon = ca.issue("almost", CA_WARN_BEFORE - dt.timedelta(days=1)).cert_pem
    write_atomic(pki / "peer-ca.crt", soon)
    view = trust_view(pki, daemon, {"m1": (now + dt.timedelta(days=3)).timestamp()},
                      member_warn=dt.timedelta(days=15), daemon_warn=dt.timedelta(days=15),
                      now=now)
    assert view["layout"] == "separate"
    assert view["cas"]["peer"]["expiring"] is True
    assert [w.split(" ")[0] for w in view["warnings"]] == ["peer", "member"]

    # the daemon certificate missing: shown as unknown, not as fine
    daemon.unlink()
    view = trust_view(pki, daemon, {}, dt.timedelta(days=15), dt.timedelta(days=15), now)
    assert view["daemon_certificate"]["not_after"] is None
    assert view["daemon_certificate"]["expiring"] is None

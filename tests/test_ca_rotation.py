"""Peer CA rotation on real etcd, under writers: a one-CA cluster (made as ckeetcd made
clusters before the peer CA) migrates to a separate peer CA with the daemon kill -9ed
after each kind of step, then the new peer CA is rotated once more. Throughout: no
acknowledged write lost, quorum held; at the end a user certificate (and a peer
certificate of the replaced CA) is refused on the peer port."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ckeetcd.pki import TLSFiles, ensure_ca
from tests.harness import Cluster, Writer, wait_for
from tests.test_crash_safety import Watch
from tests.test_security import https_context, request_over

NAMES = ["m1", "m2", "m3"]
# Killed right after each of these (CKEETCD_FAILPOINT), in this order, one per run.
KILLS = ["rotate-ca:make-ca", "stop-member:stop-process", "restart-member:start-process",
         "renew-member-certs:install-tls", "rotate-ca:finish"]


def status(c: Cluster) -> dict[str, Any]:
    r = c.cli("status", "--output", "json")
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def peer_role(c: Cluster) -> dict[str, Any] | None:
    rotation = status(c)["rotation"]
    return rotation["roles"].get("peer") if rotation else None


def rotated(c: Cluster) -> bool:
    peer = peer_role(c)
    return bool(peer and peer["done"])


def peer_answer(c: Cluster, name: str, tls: TLSFiles, ca_file: str = "peer-ca.crt") -> str:
    """GET /members on `name`'s peer port with `tls`, verifying it with the peer CA."""
    ca = c.state_dir / "pki" / ca_file
    return request_over(c.address_of(name), 2380,
                        https_context(TLSFiles(ca=ca, cert=tls.cert, key=tls.key)), "GET",
                        "/members")


def one_ca_cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """Three members whose peers trust ca.crt, the CA of every client too."""
    c = make_cluster()
    ensure_ca(c.state_dir / "pki", "test")
    # a cluster sign: the daemon keeps one CA (peer_ca_action PEER_ONE_CA), as for a
    # cluster made by the code before the peer CA
    (c.state_dir / "history.jsonl").write_text('{"event": "made before the peer CA"}\n')
    c.start_daemon()
    c.wait_healthy(NAMES)
    assert not (c.state_dir / "pki" / "peer-ca.crt").exists()
    assert status(c)["trust"]["layout"] == "one-ca"
    return c


def run_to_done(c: Cluster, kills: list[str], done: Callable[[], bool] | None = None,
                what: str = "the peer rotation done") -> list[str]:
    """Run the daemon until the rotation is `done` (default: the peer rotation): first
    once per failpoint (each run ends killed right after that step), then without one.
    The failpoints hit."""
    finished = done or (lambda: rotated(c))
    hit = []
    for point in kills:
        c.stop_daemon()  # (none runs unless the last point was never reached)
        mark = c.mark()
        daemon = c.start_daemon(env={"CKEETCD_FAILPOINT": point})
        wait_for(lambda d=daemon: d.poll() is not None or finished(), 180,
                 f"the daemon killed after {point}, or {what}")
        if daemon.poll() is not None:
            assert daemon.returncode == -signal.SIGKILL, daemon.returncode
            assert [f"{e['op']}:{e['step']}" for e in c.events("failpoint", since=mark)] \
                == [point]
            hit.append(point)
    if c.daemon is None or c.daemon.poll() is not None:
        c.start_daemon()
    wait_for(finished, 240, what, abort=c.daemon_died)
    return hit


def test_one_ca_cluster_migrates_then_rotates_its_peer_ca_under_writers(
        make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    c = one_ca_cluster(make_cluster)
    user = c.client_cert("kube-apiserver")
    # One CA signs peers and users here, but the members run with
    # --peer-cert-allowed-cn (ckeetcd.core.peercn): the user's certificate is refused on
    # the peer port already; the separate peer CA refuses it a second time below.
    assert peer_answer(c, "m1", user, "ca.crt").startswith("failed:")
    with Watch(c) as watch, Writer(c, lambda: NAMES) as writer:
        c.stop_daemon()  # started again with the first failpoint, by run_to_done
        pki = sorted(p.name for p in (c.state_dir / "pki").iterdir())
        r = c.cli("ca", "rotate", "--client")  # one CA: the peers move out first
        assert r.returncode == 2 and "migrate to a separate peer CA first" in r.stderr, r
        assert sorted(p.name for p in (c.state_dir / "pki").iterdir()) == pki
        r = c.cli("ca", "rotate", "--peer")
        assert r.returncode == 0, r.stderr
        assert "migration from one CA" in r.stdout
        again = c.cli("ca", "rotate", "--peer")
        assert again.returncode == 2 and "under way" in again.stderr, again
        assert run_to_done(c, KILLS) == KILLS
        c.wait_healthy(NAMES)
        view = peer_role(c)
        assert view is not None and view["migration"]
        assert {n: m["certificate"] for n, m in view["members"].items()} == dict.fromkeys(
            NAMES, "new")
        assert all(m["trusts"] == ["new"] for m in view["members"].values())
        assert status(c)["trust"]["layout"] == "separate"
        for name in NAMES:  # the user certificate no longer passes the peer port
            assert peer_answer(c, name, user).startswith("failed:"), name
            own = c.state_dir / "members" / name / "tls"
            assert peer_answer(c, name, TLSFiles(ca=own / "peer-ca.crt", cert=own / "peer.crt",
                                                 key=own / "peer.key")).startswith("200 ")
        # a peer certificate of the CA about to be replaced, kept aside
        old = tmp_path / "old-peer"
        shutil.copytree(c.state_dir / "members" / "m1" / "tls", old)

        # A second rotation: peer CA -> a new peer CA, no failpoints.
        r = c.cli("ca", "rotate", "--peer")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: (p := peer_role(c)) is not None and not p["done"], 30, "started")
        assert run_to_done(c, []) == []
        c.wait_healthy(NAMES)
        for name in NAMES:
            assert peer_answer(c, name, TLSFiles(ca=old / "peer-ca.crt", cert=old / "peer.crt",
                                                 key=old / "peer.key")).startswith("failed:")
            assert peer_answer(c, name, user).startswith("failed:"), name
    assert watch.samples > 0 and watch.quorum_lost == 0
    assert writer.acked and writer.read_misses == []
    for name in NAMES:
        assert writer.lost(name) == [], name
    restarts = [e for e in c.events("op_step") if e.get("op") == "restart-member"
                and e.get("step") == "start-process" and e.get("outcome") == "ok"]
    assert len(restarts) >= 12  # each rotation: every member onto old+new, then onto new

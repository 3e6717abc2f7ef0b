"""`--peer-cert-allowed-cn` on real etcd: a cluster made as older ckeetcd made them (peer
certificates named after their member, no flag) moves onto the shared CN under
writers: every peer certificate is renewed in place first, then each member restarts
onto the flag, one at a time. No acknowledged write lost, quorum held; afterwards a
certificate of the peer CA with another CN is refused on the peer port."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ckeetcd.core.model import Desired
from ckeetcd.core.peercn import PEER_CN
from ckeetcd.loop.daemonca import open_ca
from ckeetcd.nodes import MemberSpec
from ckeetcd.nodes.local import LocalRuntime
from ckeetcd.pki import PEER, PEER_CA_CERT, TLSFiles, load_ca, member_tls_files
from ckeetcd.pki.members import member_ips
from ckeetcd.support.files import write_atomic, write_private
from tests.harness import Cluster, Writer, wait_for
from tests.test_crash_safety import Watch
from tests.test_security import https_context, request_over

NAMES = ["m1", "m2", "m3"]


def old_cluster(c: Cluster) -> None:
    """Three members started as an older ckeetcd started them: separate peer CA, each
    peer certificate's CN the member's name, no --peer-cert-allowed-cn."""
    config = c.config
    trust, _ = open_ca(config)  # the CAs and the daemon's root certificate
    desired = Desired.from_config(config)
    rt = LocalRuntime(c.state_dir, config.etcd)
    initial = tuple((d.name, d.peer_url) for d in desired.members)

    async def start() -> None:
        for d in desired.members:
            await rt.install_tls(d.name, member_tls_files(
                trust.client, d.name, d.address, dns=desired.member_dns, peer_ca=trust.peer,
                peer_cn=d.name))
        for d in desired.members:
            await rt.start(MemberSpec(name=d.name, client_url=d.client_url,
                                      peer_url=d.peer_url, cluster_token=desired.cluster_name,
                                      initial_cluster=initial, initial_state="new",
                                      peer_trust=PEER_CA_CERT))

    asyncio.run(start())
    wait_for(lambda: c.healthy_names() == set(NAMES), 60, "the old cluster healthy")


def status(c: Cluster) -> dict[str, Any]:
    r = c.cli("status", "--output", "json")
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def on_the_flag(c: Cluster) -> bool:
    rows = [m for m in status(c)["members"] if m["in_cluster"]]
    return len(rows) == 3 and all(m["healthy"] and m["peer_cert_allowed_cn"] == PEER_CN
                                  and m["restart_for"] is None for m in rows)


def peer_cert(c: Cluster, cn: str, name: str = "m1") -> TLSFiles:
    """A certificate of the cluster's peer CA for `name`'s address, with CN `cn`."""
    pair = load_ca(c.state_dir / "pki", PEER).issue(
        cn, dt.timedelta(hours=1), server=True, client=True,
        ips=member_ips(c.address_of(name)))
    d = c.root / "peer-certs"
    d.mkdir(exist_ok=True)
    write_atomic(d / f"{cn}.crt", pair.cert_pem)
    write_private(d / f"{cn}.key", pair.key_pem)
    return TLSFiles(ca=c.state_dir / "pki" / PEER_CA_CERT, cert=d / f"{cn}.crt",
                    key=d / f"{cn}.key")


def peer_answer(c: Cluster, name: str, tls: TLSFiles) -> str:
    return request_over(c.address_of(name), 2380, https_context(tls), "GET", "/members")


def test_an_old_cluster_moves_onto_the_shared_peer_cn_under_writers(
        make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    c = make_cluster()
    old_cluster(c)
    named = peer_cert(c, "m1")  # what m1 presented before: the peer CA's, CN m1
    assert peer_answer(c, "m2", named).startswith("200 ")  # no CN check yet
    with Watch(c) as watch, Writer(c, lambda: NAMES) as writer:
        mark = c.mark()
        c.start_daemon()
        wait_for(lambda: on_the_flag(c), 180, "every member on --peer-cert-allowed-cn",
                 abort=c.daemon_died)
    ops = [(e["op"], e["targets"]) for e in c.events("op", since=mark)
           if e["outcome"] == "ok" and e["op"] in ("renew-member-certs", "stop-member")]
    renewed = [t for op, t in ops if op == "renew-member-certs"]
    stopped = [t for op, t in ops if op == "stop-member"]
    assert sorted(renewed) == NAMES and sorted(stopped) == NAMES, ops
    # no member got the flag while any peer could still present its old certificate
    assert [op for op, _ in ops] == ["renew-member-certs"] * 3 + ["stop-member"] * 3, ops
    assert watch.samples > 0 and watch.quorum_lost == 0
    assert writer.acked and writer.read_misses == []
    for name in NAMES:
        assert writer.lost(name) == [], name
        cmd = json.loads((c.state_dir / "members" / name / "etcd.pid").read_text())["cmd"]
        assert f"--peer-cert-allowed-cn={PEER_CN}" in cmd
        # the peer CA's certificate with another CN fails the handshake (both the old
        # member certificate and a fresh one); the shared CN passes
        assert peer_answer(c, name, named).startswith("failed:"), name
        assert peer_answer(c, name, peer_cert(c, "intruder")).startswith("failed:"), name
        assert peer_answer(c, name, peer_cert(c, PEER_CN)).startswith("200 "), name

"""CA rotations with members over SSH, in the namespace lab: one daemon (on h1), three
members reached only over SSH, the soak writers on h4.

A peer CA rotation under writers: the trust bundles and the re-issued peer
certificates are installed on each node over SSH, each member's bundle is read back
from the command line its node recorded (etcd.cmd), one member at a time. At the
end a peer certificate of the old CA is refused on the peer port (a real handshake,
from the host the certificate names) and no acknowledged write is lost. Then a
client CA rotation (short grace, writers stopped: their certificates are the old
CA's): the old root certificate is refused on the client port."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.harness import wait_for
from tests.multihost import PY, MultiCluster
from tests.netns import Lab
from tests.soak import checker
from tests.soak.history import read_history
from tests.test_multihost_rolling import USERS, acked, start_workload, stored
from tests.test_versions import E35

HOSTS = ["h1", "h2", "h3"]
GRACE = '[tls]\nrotation_grace = "5s"\n'
# One HTTPS GET with a client certificate, from inside the lab: "200", or why it failed.
HANDSHAKE = """
import http.client, ssl, sys
ca, cert, key, host, port, path = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
conn = http.client.HTTPSConnection(host, int(port), timeout=5, context=ctx)
try:
    conn.request("GET", path)
    print(conn.getresponse().status)
except (OSError, http.client.HTTPException) as e:
    print("failed:", type(e).__name__, e)
"""

pytestmark = pytest.mark.skipif(not E35.exists(), reason="scripts/fetch-etcd 3.5.30 first")


def answer(c: MultiCluster, source: str, target: str, port: int, ca: Path, cert: Path,
           key: Path, path: str = "/members") -> str:
    """GET `path` on `target`:`port` from host `source` (etcd checks a peer's IP SAN
    against the address it comes from)."""
    r = c.lab.exec(source, PY, "-c", HANDSHAKE, str(ca), str(cert), str(key),
                   c.lab.host(target).address, str(port), path, timeout=30)
    return r.stdout.strip() or r.stderr.strip()[-300:]


def role(c: MultiCluster, name: str) -> dict[str, Any] | None:
    rotation = c.status("h1")["rotation"]
    return rotation["roles"].get(name) if rotation else None


def rotated(c: MultiCluster, name: str) -> bool:
    r = role(c, name)
    if not (r and r["done"]):
        return False
    st = c.status("h1")
    rows = [m for m in st["members"] if m["in_cluster"]]
    return len(rows) == 3 and all(m["healthy"] for m in rows)


def test_peer_and_client_ca_rotations_over_ssh(lab: Lab, tmp_path: Path) -> None:
    c = MultiCluster(lab, tmp_path / "mc", HOSTS, ["h1"], extra=USERS + GRACE,
                     etcd_binary=str(E35))
    c.start_daemons()
    wait_for(lambda: c.leader() == "h1", 60, "the daemon leads", abort=c.died)
    c.wait_healthy(HOSTS, timeout=120)
    pki = c.state_dir("h1") / "pki"
    old = tmp_path / "old-peer"  # h1's peer credential before the rotation
    shutil.copytree(c.member_dir("h1") / "tls", old)
    assert answer(c, "h1", "h2", 2380, old / "peer-ca.crt", old / "peer.crt",
                  old / "peer.key") == "200"
    work = tmp_path / "work"
    work.mkdir()
    clients = start_workload(c, work)
    try:
        wait_for(lambda: acked(work) >= 20, 60, "the writers acknowledged")
        r = c.cli("h1", "ca", "rotate", "--peer")
        assert r.returncode == 0, r.stderr
        before = acked(work)
        wait_for(lambda: rotated(c, "peer"), 300, "the peer CA rotated", interval=1.0,
                 abort=c.died)
        wait_for(lambda: acked(work) > before + 20, 60, "writes after the rotation")
    finally:
        clients.send_signal(signal.SIGTERM)
        clients.wait(30)
    verdict = checker.check_writes(read_history(work / "history.jsonl"), stored(c))
    assert verdict.violations == [], verdict.violations  # every acknowledged write is there
    assert verdict.acked > 40
    view = role(c, "peer")
    assert view is not None and all(m == {"trusts": ["new"], "certificate": "new"}
                                    for m in view["members"].values()), view
    for m in HOSTS:
        cmd = json.loads((c.member_dir(m) / "etcd.cmd").read_text())
        trust = next(a for a in cmd if a.startswith("--peer-trusted-ca-file="))
        assert Path(trust.split("=", 1)[1]).name.startswith("trust-peer-"), cmd
    new = c.member_dir("h1") / "tls"
    for target in ("h2", "h3"):
        assert answer(c, "h1", target, 2380, pki / "peer-ca.crt", old / "peer.crt",
                      old / "peer.key").startswith("failed:"), target
        assert answer(c, "h1", target, 2380, pki / "peer-ca.crt", new / "peer.crt",
                      new / "peer.key") == "200", target
    restarts = sorted(e["targets"] for _, e in c.all_events("op")
                      if e["op"] == "restart-member" and e["outcome"] == "ok")
    assert restarts == sorted(HOSTS * 2)  # each onto old + new, then onto new alone

    # The client CA: the daemon's old root certificate is refused once it is done.
    shutil.copy(pki / "daemon-root.crt", tmp_path / "old-root.crt")
    shutil.copy(pki / "daemon-root.key", tmp_path / "old-root.key")
    r = c.cli("h1", "ca", "rotate", "--client")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: rotated(c, "client"), 300, "the client CA rotated", interval=1.0,
             abort=c.died)
    for target in HOSTS:
        assert answer(c, "h1", target, 2379, pki / "ca.crt", tmp_path / "old-root.crt",
                      tmp_path / "old-root.key", "/version").startswith("failed:"), target
        assert answer(c, "h1", target, 2379, pki / "ca.crt", pki / "daemon-root.crt",
                      pki / "daemon-root.key", "/version") == "200", target
    assert c.died() is None

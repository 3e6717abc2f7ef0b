"""A full peer and a full client CA rotation with three daemons, one of them a `--no-key`
follower, in the namespace lab (members over SSH), under the soak's writers and readers.

The record goes through etcd (/ckeetcd/rotation/<role>): the peer rotation is started
on the leader daemon's host, the leader is killed -9 once the new CA is named, and the
other key holder takes over. The new CA's key never went to etcd, so that leader holds
and says what to copy (status, plan, `ca_rotation_key_missing`); the operator copies
it (`ca export` where it was made, `ca import` here) and the rotation goes on. The
client rotation is started on a daemon host that does not lead; every daemon's root
certificate is re-issued from the new client CA (the leader's and the other key
holder's by themselves, the `--no-key` follower's through the leader's CSR signer),
and the old CA is dropped only after that. At the end every member and every daemon
is on the new CAs, the soak checker finds nothing acknowledged lost, and certificates
of the old CAs are refused (a real TLS handshake on :2379 and :2380)."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from ckeetcd.core.carotation import Record
from ckeetcd.pki.rotationfiles import cert_fingerprint, read_rotation
from tests.harness import wait_for
from tests.multihost import PY, MultiCluster
from tests.netns import Lab
from tests.soak.labsoak import USERS_EXTRA, LabSoak


def role_of(c: MultiCluster, host: str, role: str) -> dict[str, Any] | None:
    rotation = c.status(host)["rotation"]
    got: dict[str, Any] | None = rotation["roles"].get(role) if rotation else None
    return got


def record_of(c: MultiCluster, host: str, role: str, since: float) -> Record | None:
    """`host`'s copy of the record (its daemon takes it from etcd) of a rotation started
    after `since`: read from its file, not by a `status` run (which would load the lab)."""
    rotation = read_rotation(c.state_dir(host) / "pki", role)
    return rotation.record if rotation and rotation.record.started >= since else None


CA_FILE = {"peer": "peer-ca.crt", "client": "ca.crt"}


def on_new_ca(c: MultiCluster, host: str, role: str) -> bool:
    """`host`'s own CA file of `role` is the new CA of the role's finished rotation."""
    pki = c.state_dir(host) / "pki"
    rotation = read_rotation(pki, role)
    return rotation is not None and rotation.record.done and \
        cert_fingerprint((pki / CA_FILE[role]).read_bytes()) == rotation.record.new


def done_everywhere(c: MultiCluster, role: str, since: float) -> bool:
    """Every daemon host's record says done, and its own CA file is the new CA."""
    return all((r := record_of(c, h, role, since)) and r.done and on_new_ca(c, h, role)
               for h in c.daemon_hosts)


# One HTTPS request inside the lab, our certificate sent, the server's not checked
# (the question is whether the member accepts ours): the status, or why it failed.
REQUEST = """
import http.client, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
conn = http.client.HTTPSConnection(sys.argv[1], int(sys.argv[2]), timeout=5, context=ctx)
try:
    conn.request("GET", sys.argv[5])
    print(conn.getresponse().status)
except (OSError, http.client.HTTPException) as e:
    print("failed", repr(e))
"""


def answers(c: MultiCluster, member: str, port: int, cert: Path, key: Path) -> str:
    """What `member`'s port says to a request with our certificate ("200", or "failed
    ..." when the TLS handshake is refused), sent from the member's own host: etcd
    checks a peer certificate's addresses against where the connection comes from."""
    r = c.lab.exec(member, PY, "-c", REQUEST, c.lab.host(member).address, str(port),
                   str(cert), str(key), "/version" if port == 2379 else "/members",
                   timeout=30)
    return r.stdout.strip() or r.stderr.strip()[-300:]


def rotate(c: MultiCluster, host: str, flag: str) -> None:
    """`ca rotate FLAG` on `host`, again while it finds the cluster unhealthy (on this
    loaded machine a Status answer can be late five times running; a refusal writes
    nothing, so an operator simply runs it again)."""
    def once() -> bool:
        r = c.cli(host, "ca", "rotate", flag)
        assert r.returncode == 0 or "not healthy" in r.stderr, r.stderr
        return r.returncode == 0
    wait_for(once, 120, f"ca rotate {flag} on {host} accepted", interval=1.0, abort=c.died)


def copy_next_ca(c: MultiCluster, src: str, dst: str, role: str) -> None:
    """The operator's step: the new CA (with its key) from where it was made."""
    bundle = c.root / f"next-{role}-{src}-to-{dst}.json"
    r = c.cli(src, "ca", "export", "--out", str(bundle))
    assert r.returncode == 0 and f"the new {role} CA" in r.stdout, (r.stdout, r.stderr)
    r = c.cli(dst, "ca", "import", str(bundle))
    assert r.returncode == 0 and f"the new {role} CA" in r.stdout, (r.stdout, r.stderr)
    bundle.unlink()


@pytest.mark.timeout(600)  # two full rotations over SSH on a shared 2-core machine
def test_peer_and_client_rotation_with_three_daemons_a_no_key_follower_and_a_leader_kill(
        lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = MultiCluster(lab, tmp_path / "mc", ["h1", "h2", "h3"], ["h1", "h2", "h3"],
                     extra=USERS_EXTRA + '[tls]\nrotation_grace = "4s"\n')
    c.share_ca(without_key=("h3",))
    c.start_daemons()
    c.wait_healthy(c.members)
    first = wait_for(c.leader, 30, "a leader daemon", abort=c.died)
    assert first != "h3"  # the --no-key follower never leads
    second = "h2" if first == "h1" else "h1"
    old = tmp_path / "old"  # certificates of the CAs about to be replaced, kept aside
    shutil.copytree(c.member_dir("h1") / "tls", old / "peer")
    timings: dict[str, float] = {}
    with LabSoak(c, "h4", "h3", issuer=first) as soak:
        soak.start()
        shutil.copytree(soak.dir / "certs", old / "user")

        # 1. Peer rotation, started on the leader's host; the leader killed -9 once the
        #    new CA is named (in etcd), before anyone copied it.
        t0 = time.time()
        rotate(c, first, "--peer")
        wait_for(lambda: (p := record_of(c, second, "peer", t0)) and p.new, 60,
                 f"the new peer CA named in {second}'s copy of the record", abort=c.died)
        c.kill_daemon(first, signal.SIGKILL)
        wait_for(lambda: c.leader() == second, 30, f"{second} leading", abort=c.died)
        held = wait_for(lambda: c.events(second, "ca_rotation_key_missing"), 30,
                        f"{second} saying the new peer CA's key is missing", abort=c.died)
        assert held[0]["role"] == "peer" and "ckeetcd ca import" in held[0]["hint"]
        view = role_of(c, second, "peer")
        assert view and "held" in view["reason"] and "pki/next-peer/" in view["reason"]
        plan = c.cli(second, "plan")
        assert plan.returncode == 0 and "held" in plan.stdout, plan.stdout
        copy_next_ca(c, first, second, "peer")  # from the dead leader's host
        c.start_daemon(first)  # back, as a follower
        wait_for(lambda: done_everywhere(c, "peer", t0), 240, "the peer rotation done on "
                 "every daemon host", interval=1.0, abort=c.died)
        timings["peer"] = time.time() - t0

        # 2. Client rotation, started on a daemon host that does not lead.
        leader = wait_for(c.leader, 30, "a leader daemon", abort=c.died)
        other = second if leader == first else first
        t1 = time.time()
        rotate(c, other, "--client")
        wait_for(lambda: (p := record_of(c, leader, "client", t1)) and p.new, 60,
                 "the new client CA named", abort=c.died)
        copy_next_ca(c, leader, other, "client")  # to the other key holder, as documented
        # the bundle is there from the moment every member trusts both CAs (the servers'
        # certificates are re-issued from then on) to the finish
        wait_for(lambda: (c.state_dir(leader) / "pki" / "client-bundle.crt").exists(),
                 120, "servers on either client CA", interval=0.05, abort=c.died)
        fresh = soak.issue(leader)  # the clients get the bundle and a new-CA certificate
        assert fresh["ca_certificate"].count("BEGIN CERTIFICATE") == 2
        wait_for(lambda: done_everywhere(c, "client", t1), 240, "the client rotation done "
                 "on every daemon host", interval=1.0, abort=c.died)
        timings["client"] = time.time() - t1
        c.wait_healthy(c.members, host="h3")
        soak.wait_resumed(time.monotonic(), 60)
        report = soak.finish()

    with capsys.disabled():
        print(f"\nlab rotation: peer {timings['peer']:.1f} s (with the hold and the copy), "
              f"client {timings['client']:.1f} s; {report.figures['operations']}")
    assert report.problems() == []
    assert report.writes.acked > 0 and report.order.reads > 0
    for host in c.daemon_hosts:  # every daemon on the new CAs, in its own files
        pki = c.state_dir(host) / "pki"
        assert on_new_ca(c, host, "peer") and on_new_ca(c, host, "client"), host
        own = x509.load_pem_x509_certificate((pki / "daemon-root.crt").read_bytes())
        own.verify_directly_issued_by(x509.load_pem_x509_certificate(
            (pki / "ca.crt").read_bytes()))
        assert not (pki / "client-bundle.crt").exists() and not (pki / "next-peer").exists()
        view = role_of(c, host, "client")
        assert view and {m["certificate"] for m in view["members"].values()} == {"new"}
    assert not (c.state_dir("h3") / "pki" / "ca.key").exists()  # never reached the follower
    renewed = {e["how"] for e in c.events("h3", "daemon_cert_renewed")}
    assert "signed by the leader" in renewed
    for m in c.members:
        tls = c.member_dir(m) / "tls"
        assert answers(c, m, 2380, tls / "peer.crt", tls / "peer.key") == "200", m
        refused = answers(c, m, 2380, old / "peer" / "peer.crt", old / "peer" / "peer.key")
        assert refused.startswith("failed"), (m, refused)
        now = soak.dir / "certs"
        assert answers(c, m, 2379, now / "soak.crt", now / "soak.key") == "200", m
        refused = answers(c, m, 2379, old / "user" / "soak.crt", old / "user" / "soak.key")
        assert refused.startswith("failed"), (m, refused)
    # the next CA's key never went to etcd: only public certificates under /ckeetcd/rotation/
    r = c.etcdctl("h3", "get", "/ckeetcd/rotation/", "--prefix", daemon="h3")
    assert r.returncode == 0
    assert "PRIVATE KEY" not in r.stdout and "BEGIN CERTIFICATE" in r.stdout

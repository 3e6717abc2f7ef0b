"""Member certificates are renewed before they expire, with no client-visible failure.

With a 60 s lifetime renewed 45 s before expiry, every member gets new
certificates about every 15 s; etcd reads its certificate files on each new
handshake, so nothing is restarted.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import ssl
import stat

from cryptography import x509

from ckeetcd.pki import not_after
from tests.harness import Cluster, Writer, wait_for

SHORT_TLS = '[tls]\nmember_cert_lifetime = "60s"\nmember_cert_renew_before = "45s"\n'


def served_serial(cluster: Cluster, name: str, port: int = 2379) -> int:
    """The serial of the certificate `name` serves on `port`; the peer port (2380) is
    asked with the member's own peer credential, which its peer CA signed."""
    tls = cluster.root_tls()
    ca, cert, key = tls.ca, tls.cert, tls.key
    if port == 2380:
        own = cluster.state_dir / "members" / name / "tls"
        ca = cluster.state_dir / "pki" / "peer-ca.crt"
        cert, key = own / "peer.crt", own / "peer.key"
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    host = cluster.address_of(name)
    with socket.create_connection((host, port), timeout=3) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as s:
        der = s.getpeercert(binary_form=True)
    assert der
    return x509.load_der_x509_certificate(der).serial_number


def test_member_certs_renewed_one_at_a_time_without_failures(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c = make_cluster(extra=SHORT_TLS)
    c.start_daemon()
    names = ["m1", "m2", "m3"]
    c.wait_healthy(names)
    pids = {n: c.member_pid(n) for n in names}
    first = {n: (served_serial(c, n), served_serial(c, n, 2380)) for n in names}
    mark = c.mark()
    with Writer(c, lambda: names) as writer:
        def all_renewed() -> bool:
            now = {n: (served_serial(c, n), served_serial(c, n, 2380)) for n in names}
            return all(now[n][0] != first[n][0] and now[n][1] != first[n][1] for n in names)

        wait_for(all_renewed, 60, "every member serving renewed client and peer certs")
    renewals = [e for e in c.events("cycle", since=mark)
                if any(op.startswith("renew-member-certs") for op in e["ops"])]
    assert renewals
    assert all(len(e["ops"]) == 1 for e in renewals), "more than one member renewed at once"
    assert {n: c.member_pid(n) for n in names} == pids, "a renewal restarted a member"
    # the longest write stall during the renewals is bench/renewal.py's figure
    assert writer.read_misses == []
    assert writer.lost("m1") == []
    c.wait_healthy(names)


def test_the_daemon_renews_its_own_certificate_while_running(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """A 30 s daemon certificate: renewed with 10 s left, and the daemon outlives the first.

    gRPC only checks a certificate at the handshake, so the proof is a new one
    after the first certificate expired: kill -9 a member, and the daemon must
    reconnect to it to see it restarted and healthy.
    """
    c = make_cluster(extra='[tls]\ndaemon_cert_lifetime = "30s"\n')
    c.start_daemon()
    names = ["m1", "m2", "m3"]
    c.wait_healthy(names)
    tls = c.root_tls()
    first = not_after(tls.cert.read_bytes())
    renewed = wait_for(lambda: c.events("daemon_cert_renewed"), 40, "daemon_cert_renewed",
                       abort=c.daemon_died)
    assert renewed[0]["how"] == "issued here"
    assert not_after(tls.cert.read_bytes()) > first
    assert stat.S_IMODE(tls.key.stat().st_mode) == 0o600

    wait_for(lambda: dt.datetime.now(dt.timezone.utc) > first + dt.timedelta(seconds=1), 40,
             "the first certificate expired")
    pid = c.member_pid("m2")
    assert pid is not None
    mark = c.mark()
    os.kill(pid, signal.SIGKILL)
    c.ok_ops(mark, through="restart-member", timeout=30)

    def all_healthy_seen() -> bool:
        return any(all(m["healthy"] for m in e["members"]) and len(e["members"]) == 3
                   for e in c.events("health", since=mark))

    wait_for(all_healthy_seen, 30, "the daemon seeing m2 healthy again", abort=c.daemon_died)

"""Member certificates are renewed before they expire, with no client-visible failure.

With a 60 s lifetime renewed 45 s before expiry, every member gets new
certificates about every 15 s; etcd reads its certificate files on each new
handshake, so nothing is restarted.
"""

from __future__ import annotations

import socket
import ssl

from cryptography import x509

from tests.harness import Cluster, Writer, wait_for

SHORT_TLS = '[tls]\nmember_cert_lifetime = "60s"\nmember_cert_renew_before = "45s"\n'


def served_serial(cluster: Cluster, name: str, port: int = 2379) -> int:
    tls = cluster.root_tls()
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
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
    assert writer.max_outage < 2.0, writer.max_outage
    assert writer.read_misses == []
    assert writer.lost("m1") == []
    c.wait_healthy(names)

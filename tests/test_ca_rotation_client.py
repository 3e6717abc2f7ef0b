"""Client CA rotation on real etcd, under a writer, with the daemon kill -9ed after
several steps: the members' server certificates and the daemon's own certificate move
to the new client CA, a user certificate of the old CA is accepted through the grace
period and refused after it, `ckecli etcd issue` certificates issued mid-rotation (and
their `ca_certificate`) work throughout and after, and `root-issue` still works.
No acknowledged write lost, quorum held."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ckeetcd.pki import TLSFiles
from tests.harness import Cluster, Writer, ckecli
from tests.test_ca_rotation import run_to_done, status
from tests.test_crash_safety import Watch
from tests.test_security import https_context, request_over

NAMES = ["m1", "m2", "m3"]
GRACE = 10  # seconds ([tls] rotation_grace): long enough to look at it, short for CI
# Killed right after each of these, in this order, one per run; the stop is drop-old's
# (trust-both's stops came before the grace): the daemon restarts with its new-CA
# certificate while ca.crt is still the old CA.
KILLS = ["rotate-ca:make-ca", "renew-member-certs:install-tls", "rotate-ca:reissue-daemon",
         "rotate-ca:start-grace", "stop-member:stop-process", "rotate-ca:finish"]


def client_role(c: Cluster) -> dict[str, Any] | None:
    rotation = status(c)["rotation"]
    return rotation["roles"].get("client") if rotation else None


def accepted(c: Cluster, name: str, tls: TLSFiles) -> bool:
    """Whether `name`'s client port accepts the client certificate `tls` (the server's
    own certificate not checked: that is the question of `verified`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    return request_over(c.address_of(name), 2379, ctx, "GET", "/version").startswith("200 ")


def verified(c: Cluster, name: str, tls: TLSFiles) -> bool:
    """A request as a user makes it: the server verified with tls.ca, our cert sent."""
    return request_over(c.address_of(name), 2379, https_context(tls), "GET",
                        "/version").startswith("200 ")


def issued(c: Cluster, d: Path, user: str) -> TLSFiles:
    """`ckecli etcd issue USER` (or root-issue), its three PEMs written under `d`."""
    r = ckecli(c.config_path, *(["root-issue"] if user == "root" else ["issue", user]))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    d.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(ca=d / "ca.crt", cert=d / "user.crt", key=d / "user.key")
    files.ca.write_text(out["ca_certificate"])
    files.cert.write_text(out["certificate"])
    files.key.touch(0o600)
    files.key.write_text(out["private_key"])
    return files


def test_client_ca_rotation_under_writers_with_kills(
        make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    c = make_cluster(extra=f'[tls]\nrotation_grace = "{GRACE}s"\n')
    c.start_daemon()
    c.wait_healthy(NAMES)
    old_user = c.client_cert("app", ttl_hours=2)  # issued before the rotation
    assert all(accepted(c, n, old_user) for n in NAMES)
    seen_grace: list[dict[str, Any]] = []
    mid: list[TLSFiles] = []

    def look() -> bool:
        """Done yet? During the grace: the old user certificate still accepted, and an
        `issue` certificate (new CA) with its bundle works on every member."""
        role = client_role(c)
        if role and role["stage"] == "grace" and role["grace_until"] and not mid:
            mid.append(issued(c, tmp_path / "mid", "app2"))
            seen_grace.append({"old": [accepted(c, n, old_user) for n in NAMES],
                               "new": [verified(c, n, mid[0]) for n in NAMES]})
        return bool(role and role["done"])

    with Watch(c) as watch, Writer(c, lambda: NAMES) as writer:
        c.stop_daemon()
        r = c.cli("ca", "rotate", "--client")
        assert r.returncode == 0, r.stderr
        assert "client CA rotation" in r.stdout
        hit = run_to_done(c, KILLS, look, "the client rotation done")
        c.wait_healthy(NAMES)
    assert hit == KILLS
    assert seen_grace == [{"old": [True] * 3, "new": [True] * 3}]
    view = client_role(c)
    assert view is not None
    assert {n: (m["certificate"], m["trusts"]) for n, m in view["members"].items()} == \
        dict.fromkeys(NAMES, ("new", ["new"]))
    pki = c.state_dir / "pki"
    assert not (pki / "client-bundle.crt").exists() and not (pki / "next-client").exists()
    for name in NAMES:
        assert not accepted(c, name, old_user), name  # refused after the grace
        assert verified(c, name, TLSFiles(ca=pki / "ca.crt", cert=mid[0].cert,
                                          key=mid[0].key)), name
    fresh, root = issued(c, tmp_path / "fresh", "app3"), issued(c, tmp_path / "root", "root")
    assert fresh.ca.read_bytes() == (pki / "ca.crt").read_bytes()
    assert all(verified(c, n, fresh) and verified(c, n, root) for n in NAMES)
    assert c.cli("status").returncode == 0  # the daemon's own certificate: the new CA's
    assert watch.samples > 0 and watch.quorum_lost == 0
    assert writer.acked and writer.read_misses == []
    for name in NAMES:
        assert writer.lost(name) == [], name

"""Who may talk to the cluster, on real etcd: TLS only, certificates only, RBAC.

One bootstrapped cluster is shared by the whole module (bootstrap is the slow
part). Every refusal is checked next to a control that succeeds against the
same member with the right credentials, so a refusal can never pass just
because the cluster was down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckeetcd.etcd import EtcdClient, EtcdError
from ckeetcd.pki import TLSFiles, ensure_ca, load_ca
from ckeetcd.pki.expiry import not_after_of
from ckeetcd.support.files import write_atomic, write_private
from tests.harness import Cluster, tls_refused

NAMES = ["m1", "m2", "m3"]
ETCDCTL = str(Path(sys.executable).parent / "etcdctl")
FAIL_FAST = ("--dial-timeout=1s", "--command-timeout=1s")  # for calls that must be refused


@pytest.fixture(scope="module")
def sec(module_tmp_path: Path, real_etcd: str) -> Iterator[Cluster]:
    """One healthy 3-member cluster (daemon running) for every test here."""
    c = Cluster(module_tmp_path, NAMES)
    try:
        c.start_daemon()
        c.wait_healthy(NAMES)
        yield c
    finally:
        c.cleanup()


# ---- helpers -----------------------------------------------------------------
def etcdctl_raw(*args: str) -> subprocess.CompletedProcess[str]:
    """etcdctl with exactly the flags given (no implicit certificates)."""
    cmd = [ETCDCTL, "--dial-timeout=2s", "--command-timeout=4s", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "ETCDCTL_API": "3"})


def version_over(address: str, port: int, context: ssl.SSLContext | None) -> str:
    """GET /version over plain HTTP (context None) or HTTPS; the answer, or why it failed."""
    return request_over(address, port, context, "GET", "/version")


def https_context(tls: TLSFiles, with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    if with_cert:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    return ctx


def peer_tls(c: Cluster, name: str) -> TLSFiles:
    """Member `name`'s own peer credential, verifying servers with the peer CA."""
    tls = c.state_dir / "members" / name / "tls"
    return TLSFiles(ca=c.state_dir / "pki" / "peer-ca.crt", cert=tls / "peer.crt",
                    key=tls / "peer.key")


def request_over(address: str, port: int, context: ssl.SSLContext | None, method: str,
                 path: str) -> str:
    """One HTTP (context None) or HTTPS request; "STATUS body", or why it failed."""
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection(address, port, timeout=5)
    else:
        conn = http.client.HTTPSConnection(address, port, timeout=5, context=context)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return f"{resp.status} {resp.read().decode(errors='replace')}"
    except (OSError, http.client.HTTPException) as e:
        return f"failed: {e!r}"
    finally:
        conn.close()


def foreign_cert(root: Path, user: str, cluster_name: str) -> TLSFiles:
    """A cert for `user` from a throwaway CA with the same name as the cluster's CA."""
    other = ensure_ca(root / "other-ca", cluster_name)
    pair = other.issue(user, dt.timedelta(hours=1))
    write_atomic(root / f"foreign-{user}.crt", pair.cert_pem)
    write_private(root / f"foreign-{user}.key", pair.key_pem)
    return TLSFiles(ca=root / "other-ca" / "ca.crt", cert=root / f"foreign-{user}.crt",
                    key=root / f"foreign-{user}.key")


def expired_cert(c: Cluster, user: str) -> TLSFiles:
    """A cert for `user` signed by the cluster CA that expired yesterday."""
    ca = load_ca(c.state_dir / "pki")
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
    pair = ca.issue(user, dt.timedelta(days=1), now=past)
    write_atomic(c.root / f"expired-{user}.crt", pair.cert_pem)
    write_private(c.root / f"expired-{user}.key", pair.key_pem)
    return TLSFiles(ca=c.state_dir / "pki" / "ca.crt", cert=c.root / f"expired-{user}.crt",
                    key=c.root / f"expired-{user}.key")


def denied(r: subprocess.CompletedProcess[str]) -> bool:
    return r.returncode != 0 and "permission denied" in r.stderr


def member_list_ok(c: Cluster, name: str) -> None:
    """The control: root's certificate gets the member list from `name`."""
    r = c.etcdctl("member", "list", endpoints=c.client_url(name))
    assert r.returncode == 0, r.stderr
    assert sorted(line.split(", ")[2] for line in r.stdout.strip().splitlines()) == NAMES


def refused_etcdctl(c: Cluster, tls: TLSFiles) -> subprocess.CompletedProcess[str]:
    """`etcdctl member list` against all members with `tls`; it must fail."""
    r = etcdctl_raw(f"--endpoints={c.endpoints(NAMES)}", f"--cacert={tls.ca}",
                    f"--cert={tls.cert}", f"--key={tls.key}", *FAIL_FAST, "member", "list")
    assert r.returncode != 0, f"etcdctl was let in: {r.stdout}"
    return r


async def call(endpoint: str, tls: TLSFiles, what: str, timeout: float = 3.0) -> EtcdError | None:
    """Run one RPC as the owner of `tls`; the EtcdError it raised, or None."""
    async with EtcdClient(endpoint, tls, timeout=timeout) as client:
        try:
            if what == "get":
                await client.get(b"/registry/x")
            elif what == "put-other":
                await client.put(b"/other", b"x")
            elif what == "grant-all":
                await client.role_grant_prefix("kube-apiserver", b"/")
            elif what == "user-add":
                await client.user_add("intruder")
            else:
                raise ValueError(what)
        except EtcdError as e:
            return e
    return None


# ---- transport ---------------------------------------------------------------
def test_plain_http_is_refused(sec: Cluster) -> None:
    root = sec.root_tls()
    for name in NAMES:
        addr = sec.address_of(name)
        assert '"etcdserver"' in version_over(addr, 2379, https_context(root))  # control
        answer = version_over(addr, 2379, None)
        assert "etcdserver" not in answer, f"{name} answered plain HTTP: {answer}"
        assert "etcdserver" not in version_over(addr, 2380, None), f"{name} peer port"

    plain = ",".join(f"http://{sec.address_of(n)}:2379" for n in NAMES)
    r = etcdctl_raw(f"--endpoints={plain}", *FAIL_FAST, "member", "list")
    assert r.returncode != 0
    assert "m1" not in r.stdout


def test_client_without_certificate_is_refused(sec: Cluster) -> None:
    root = sec.root_tls()
    for name in NAMES:
        for port, tls in ((2379, root), (2380, peer_tls(sec, name))):  # client and peer
            addr = sec.address_of(name)
            assert '"etcdserver"' in version_over(addr, port, https_context(tls))  # control
            answer = version_over(addr, port, https_context(tls, with_cert=False))
            assert answer.startswith("failed:"), f"{name}:{port} served no-cert: {answer}"
    member_list_ok(sec, "m1")

    r = etcdctl_raw(f"--endpoints={sec.endpoints(NAMES)}", f"--cacert={root.ca}", *FAIL_FAST,
                    "member", "list")
    assert r.returncode != 0
    assert tls_refused(r.stderr), r.stderr


def test_certificate_from_another_ca_is_refused(sec: Cluster) -> None:
    # Same CN as our own root certificate, and a CA with the same subject as
    # the cluster CA: only the signature tells them apart.
    forged = foreign_cert(sec.root, "root", sec.config.cluster.name)
    root = sec.root_tls()
    as_root = TLSFiles(ca=root.ca, cert=forged.cert, key=forged.key)
    for name in NAMES:
        for port in (2379, 2380):  # client and peer
            answer = version_over(sec.address_of(name), port, https_context(as_root))
            assert answer.startswith("failed:"), f"{name}:{port} took a foreign cert: {answer}"
    member_list_ok(sec, "m1")

    r = refused_etcdctl(sec, as_root)
    assert tls_refused(r.stderr), r.stderr
    err = asyncio.run(call(sec.client_url("m1"), as_root, "get", timeout=1.0))
    assert err is not None and err.unavailable, err


def test_expired_certificate_is_refused(sec: Cluster) -> None:
    expired = expired_cert(sec, "root")
    for name in NAMES:
        answer = version_over(sec.address_of(name), 2379, https_context(expired))
        assert answer.startswith("failed:"), f"{name} accepted an expired cert: {answer}"
    r = refused_etcdctl(sec, expired)
    assert tls_refused(r.stderr), r.stderr
    member_list_ok(sec, "m1")


# ---- the peer port trusts the peer CA only -----------------------------------
def test_user_and_client_certificates_are_refused_on_the_peer_port(sec: Cluster) -> None:
    """A user's certificate (here limited by RBAC to /registry/) once passed mutual TLS on
    the peer port, where RBAC does not apply: /members answered and a promote reached
    etcd. The peer port trusts only the peer CA now, so the handshake fails."""
    peer_ca = sec.state_dir / "pki" / "peer-ca.crt"
    users = {"kube-apiserver": sec.client_cert("kube-apiserver"), "root": sec.root_tls()}
    for name in NAMES:
        addr = sec.address_of(name)
        control = request_over(addr, 2380, https_context(peer_tls(sec, name)), "GET", "/members")
        assert control.startswith("200 "), f"{name}: a member's peer cert was refused: {control}"
        for user, tls in users.items():
            ctx = https_context(TLSFiles(ca=peer_ca, cert=tls.cert, key=tls.key))
            for method, path in (("GET", "/members"), ("GET", "/version"),
                                 ("POST", "/members/promote/1")):
                answer = request_over(addr, 2380, ctx, method, path)
                assert answer.startswith("failed:") and "timed out" not in answer, \
                    f"{name}: {user}'s certificate got {method} {path} on the peer port: {answer}"


def test_peer_certificate_is_refused_on_the_client_port(sec: Cluster) -> None:
    """A member's peer certificate (CN = the member's name) is no client credential."""
    member_list_ok(sec, "m1")  # control
    ca = sec.state_dir / "pki" / "ca.crt"
    for name in NAMES:
        peer = peer_tls(sec, name)
        as_client = TLSFiles(ca=ca, cert=peer.cert, key=peer.key)
        answer = version_over(sec.address_of(name), 2379, https_context(as_client))
        assert answer.startswith("failed:"), f"{name} took its peer cert as a client: {answer}"
        r = refused_etcdctl(sec, as_client)
        assert tls_refused(r.stderr), r.stderr


# ---- RBAC --------------------------------------------------------------------
def test_kube_apiserver_reads_and_writes_only_under_registry(sec: Cluster) -> None:
    kube = sec.client_cert("kube-apiserver")

    assert sec.etcdctl("put", "/registry/pods/default/p1", "v1", tls=kube).returncode == 0
    r = sec.etcdctl("get", "/registry/pods/default/p1", "--print-value-only", tls=kube)
    assert (r.returncode, r.stdout.strip()) == (0, "v1"), r.stderr
    r = sec.etcdctl("get", "--prefix", "/registry/", "--keys-only", tls=kube)
    assert "/registry/pods/default/p1" in r.stdout, r.stderr
    r = sec.etcdctl("del", "/registry/pods/default/p1", tls=kube)
    assert (r.returncode, r.stdout.strip()) == (0, "1"), r.stderr

    # Outside the prefix: neither read nor write, not even a key that merely
    # starts with the same letters.
    assert denied(sec.etcdctl("put", "/other", "x", tls=kube))
    assert denied(sec.etcdctl("get", "/other", tls=kube))
    assert denied(sec.etcdctl("get", "/registr", tls=kube))
    assert denied(sec.etcdctl("get", "/registry", tls=kube))
    assert denied(sec.etcdctl("put", "/registryx/a", "x", tls=kube))
    assert denied(sec.etcdctl("get", "--prefix", "/", tls=kube))

    # The control: root sees no /other key was ever written.
    r = sec.etcdctl("get", "/other", "--print-value-only")
    assert (r.returncode, r.stdout.strip()) == (0, ""), r.stderr


def test_kube_apiserver_cannot_change_rbac(sec: Cluster) -> None:
    kube = sec.client_cert("kube-apiserver")
    for what in ("grant-all", "user-add"):
        err = asyncio.run(call(sec.client_url("m1"), kube, what))
        assert err is not None and err.permission_denied, f"{what}: {err!r}"
    err = asyncio.run(call(sec.client_url("m1"), kube, "put-other"))
    assert err is not None and err.permission_denied, err


def test_unknown_user_is_denied(sec: Cluster) -> None:
    mallory = sec.client_cert("mallory")
    assert denied(sec.etcdctl("put", "/registry/a", "x", tls=mallory))
    assert denied(sec.etcdctl("get", "/registry/a", tls=mallory))
    assert denied(sec.etcdctl("get", "--prefix", "/", tls=mallory))
    err = asyncio.run(call(sec.client_url("m2"), mallory, "get"))
    assert err is not None and err.permission_denied, err
    r = sec.etcdctl("get", "/registry/a", "--print-value-only")  # control: nothing was written
    assert (r.returncode, r.stdout.strip()) == (0, ""), r.stderr


def test_status_shows_the_trust_and_every_expiry(sec: Cluster) -> None:
    shown = json.loads(sec.cli("status", "--output", "json").stdout)["trust"]
    pki = sec.state_dir / "pki"
    assert shown["layout"] == "separate"
    for role, name in (("client", "ca.crt"), ("peer", "peer-ca.crt")):
        end = not_after_of(pki / name)
        assert end is not None and shown["cas"][role]["not_after"] == iso(end)
        assert shown["cas"][role]["expiring"] is False
    daemon_end = not_after_of(pki / "daemon-root.crt")
    assert daemon_end is not None and shown["daemon_certificate"]["not_after"] == iso(daemon_end)
    members = shown["member_certificates"]
    assert sorted(members) == NAMES
    for name in NAMES:
        tls = sec.state_dir / "members" / name / "tls"
        first = min(e for e in (not_after_of(tls / "server.crt"), not_after_of(tls / "peer.crt"))
                    if e is not None)
        assert members[name]["not_after"] == iso(first)
    assert shown["warnings"] == []
    text = sec.cli("status").stdout
    assert "trust: separate peer and client CAs (client CA until " in text


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")

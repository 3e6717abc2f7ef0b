"""What a CA rotation may rely on, measured on the etcd versions in use (3.5.30, 3.4.23):

- etcd reads its trusted-CA files (`--trusted-ca-file`, `--peer-trusted-ca-file`)
  once, at start: a bundle written later is not in force until a restart. So a
  rotation rolls each trust change out by a rolling restart (ckeetcd.core.carotation);
- etcd reads its own certificate and key files on every new handshake: a member
  certificate re-issued in place is served to the next connection, no restart.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckeetcd.pki import CA, create_ca
from ckeetcd.pki.members import member_ips, write_cert_key
from tests.harness import next_block, wait_for

ROOT = Path(__file__).resolve().parent.parent
ETCD_DIR = Path(os.environ.get("CKEETCD_ETCD_DIR", ROOT / ".etcd"))
VERSIONS = ["3.5.30", "3.4.23"]
LIFE = dt.timedelta(days=1)


def handshake(addr: str, port: int, ca: Path, cert: Path, key: Path) -> bytes | None:
    """The DER certificate the server presents after a full mutual-TLS exchange
    (a request sent and answered: the server checked our certificate); None if refused."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    try:
        with socket.create_connection((addr, port), 3) as raw, \
                ctx.wrap_socket(raw, server_hostname=addr) as tls:
            tls.sendall(f"GET /version HTTP/1.1\r\nHost: {addr}\r\n\r\n".encode())
            if not tls.recv(64).startswith(b"HTTP/1.1 200"):
                return None
            return tls.getpeercert(binary_form=True)
    except (ssl.SSLError, OSError):
        return None


@pytest.fixture(params=VERSIONS)
def member(request: pytest.FixtureRequest, tmp_path: Path,
           real_etcd: str) -> Iterator[tuple[Path, str, CA, CA]]:
    binary = ETCD_DIR / request.param / "etcd"
    if not binary.exists():
        pytest.skip(f"scripts/fetch-etcd {request.param} first")
    one, two = create_ca(tmp_path / "ca1", "one"), create_ca(tmp_path / "ca2", "two")
    addr = f"{next_block()}.1"
    tls = tmp_path / "tls"
    tls.mkdir()
    write_cert_key(tls / "server.crt", tls / "server.key",
                   one.issue("m", LIFE, server=True, ips=member_ips(addr)))
    for name, ca in (("one", one), ("two", two)):
        write_cert_key(tls / f"{name}.crt", tls / f"{name}.key", ca.issue("root", LIFE))
    (tls / "trust.crt").write_bytes(one.cert_pem)
    (tls / "both.crt").write_bytes(one.cert_pem + two.cert_pem)
    proc = subprocess.Popen([
        str(binary), "--name=m", f"--data-dir={tmp_path / 'data'}",
        f"--listen-client-urls=https://{addr}:2379", f"--advertise-client-urls=https://{addr}:2379",
        f"--listen-peer-urls=http://{addr}:2380", f"--initial-advertise-peer-urls=http://{addr}:2380",
        f"--initial-cluster=m=http://{addr}:2380", f"--cert-file={tls / 'server.crt'}",
        f"--key-file={tls / 'server.key'}", "--client-cert-auth=true",
        f"--trusted-ca-file={tls / 'trust.crt'}"], stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "etcd.log").open("wb"))
    try:
        wait_for(lambda: handshake(addr, 2379, tls / "both.crt", tls / "one.crt",
                                   tls / "one.key"), 30, "etcd serving",
                 abort=lambda: proc.poll() is not None)
        yield tls, addr, one, two
    finally:
        proc.kill()
        proc.wait()


def test_trusted_ca_file_is_read_at_start_only(member: tuple[Path, str, CA, CA]) -> None:
    tls, addr, _, _ = member
    assert handshake(addr, 2379, tls / "both.crt", tls / "two.crt", tls / "two.key") is None
    (tls / "trust.crt").write_bytes((tls / "both.crt").read_bytes())  # the bundle, in place
    # Many new connections: the second CA stays refused (the file is not read again).
    for _ in range(30):
        assert handshake(addr, 2379, tls / "both.crt", tls / "two.crt", tls / "two.key") is None
    assert handshake(addr, 2379, tls / "both.crt", tls / "one.crt", tls / "one.key")


def test_own_certificate_is_read_on_each_new_handshake(member: tuple[Path, str, CA, CA]) -> None:
    tls, addr, one, two = member
    from cryptography import x509

    before = handshake(addr, 2379, tls / "both.crt", tls / "one.crt", tls / "one.key")
    assert before and x509.load_der_x509_certificate(before).issuer == one.cert.subject
    write_cert_key(tls / "server.crt", tls / "server.key",
                   two.issue("m", LIFE, server=True, ips=member_ips(addr)))

    def served_by_two() -> bool:
        der = handshake(addr, 2379, tls / "both.crt", tls / "one.crt", tls / "one.key")
        return bool(der) and x509.load_der_x509_certificate(der).issuer == two.cert.subject
    wait_for(served_by_two, 10, "the re-issued certificate served without a restart")

"""`ckecli etcd root-issue | issue` on a real TLS + RBAC cluster, with real etcdctl and jq.

One cluster serves the whole module; each test uses its own files and users.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from ckeetcd.pki import TLSFiles, ensure_ca, load_ca
from ckeetcd.support.files import write_atomic, write_private
from tests.harness import BIN, Cluster, ckecli, cli_env, running_cluster, tls_refused, wait_for
from tests.inproc import run_cli

REPO = Path(__file__).resolve().parent.parent

NOW_SLACK = dt.timedelta(seconds=90)


@pytest.fixture(scope="module")
def cluster(module_tmp_path: Path, real_etcd: str) -> Iterator[Cluster]:
    yield from running_cluster(module_tmp_path)


def bash(script: str, config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                          text=True, env=cli_env(config), cwd=cwd, timeout=120)


def load_cert(pem: str | bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def assert_expires_in(cert: x509.Certificate, lifetime: dt.timedelta) -> None:
    want = dt.datetime.now(dt.timezone.utc) + lifetime
    got = cert.not_valid_after_utc
    assert abs(got - want) < NOW_SLACK, f"notAfter {got}, want about {want}"


def assert_pair(issued: dict[str, str], ca_pem: bytes, cn: str, lifetime: dt.timedelta) -> None:
    """Exactly the three keys; CN; lifetime; signed by the cluster CA; key matches cert."""
    assert set(issued) == {"ca_certificate", "certificate", "private_key"}
    assert issued["ca_certificate"].encode() == ca_pem
    cert = load_cert(issued["certificate"])
    assert common_name(cert) == cn
    assert_expires_in(cert, lifetime)
    cert.verify_directly_issued_by(load_cert(ca_pem))
    key = serialization.load_pem_private_key(issued["private_key"].encode(), password=None)
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.PEM
    assert key.public_key().public_bytes(enc, pub) == cert.public_key().public_bytes(enc, pub)


# ---- the seed, verbatim ------------------------------------------------------------


def test_seed_root_issue_then_etcdctl_member_list(cluster: Cluster, tmp_path: Path) -> None:
    """CKE's page, line for line; only /tmp becomes a private temp dir."""
    d = tmp_path
    node_ip = cluster.address_of("m1")
    script = f"""
CERT=$(ckecli etcd root-issue)
echo "$CERT" | jq -r .ca_certificate > {d}/etcd-ca.crt
echo "$CERT" | jq -r .certificate > {d}/etcd-root.crt
echo "$CERT" | jq -r .private_key > {d}/etcd-root.key
export ETCDCTL_CACERT={d}/etcd-ca.crt
export ETCDCTL_CERT={d}/etcd-root.crt
export ETCDCTL_KEY={d}/etcd-root.key
etcdctl --endpoints={node_ip}:2379 member list
"""
    r = bash(script, cluster.config_path, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [line.split(", ") for line in r.stdout.strip().splitlines()]
    assert sorted(row[2] for row in rows) == ["m1", "m2", "m3"]
    assert {row[1] for row in rows} == {"started"}
    cert = load_cert((d / "etcd-root.crt").read_bytes())
    assert common_name(cert) == "root"
    assert_expires_in(cert, dt.timedelta(hours=2))


# ---- what is issued ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "cn", "lifetime"),
    [
        (["root-issue"], "root", dt.timedelta(hours=2)),
        (["root-issue", "-output=json"], "root", dt.timedelta(hours=2)),
        (["issue", "app"], "app", dt.timedelta(hours=87600)),
        (["issue", "-ttl=24h", "-output=json", "app"], "app", dt.timedelta(hours=24)),
        (["issue", "--ttl", "90m", "svc.a-1"], "svc.a-1", dt.timedelta(minutes=90)),
        (["issue", "-ttl=1h30m", "app"], "app", dt.timedelta(minutes=90)),
        (["issue", "-ttl=8760h", "app"], "app", dt.timedelta(days=365)),
    ],
)
def test_issued_json(cluster: Cluster, args: list[str], cn: str, lifetime: dt.timedelta) -> None:
    r = ckecli(cluster.config_path, *args)
    assert r.returncode == 0, r.stderr
    assert_pair(json.loads(r.stdout), (cluster.state_dir / "pki" / "ca.crt").read_bytes(),
                cn, lifetime)


@pytest.mark.parametrize(("args", "user"), [(["root-issue"], "root"), (["issue"], "app")])
def test_output_file(cluster: Cluster, tmp_path: Path, args: list[str], user: str) -> None:
    cmd = [*args, "-output=file", *([user] if user != "root" else [])]
    r = ckecli(cluster.config_path, *cmd, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    names = ["etcd-ca.crt", f"etcd-{user}.crt", f"etcd-{user}.key"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert r.stdout.split() == ["cert", "files:", *names]
    assert stat.S_IMODE((tmp_path / names[2]).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / names[1]).stat().st_mode) == 0o644
    issued = {"ca_certificate": (tmp_path / names[0]).read_text(),
              "certificate": (tmp_path / names[1]).read_text(),
              "private_key": (tmp_path / names[2]).read_text()}
    lifetime = dt.timedelta(hours=2 if user == "root" else 87600)
    assert_pair(issued, (cluster.state_dir / "pki" / "ca.crt").read_bytes(), user, lifetime)


def test_issued_root_cert_works_and_expired_one_is_refused(cluster: Cluster,
                                                           tmp_path: Path) -> None:
    """Same CA, same CN: the live certificate is served, the expired one is not."""
    ca = load_ca(cluster.state_dir / "pki")
    ca_file = cluster.state_dir / "pki" / "ca.crt"

    def files(name: str, now: dt.datetime | None) -> TLSFiles:
        pair = ca.issue("root", dt.timedelta(hours=1), now=now)
        write_atomic(tmp_path / f"{name}.crt", pair.cert_pem)
        write_private(tmp_path / f"{name}.key", pair.key_pem)
        return TLSFiles(ca=ca_file, cert=tmp_path / f"{name}.crt", key=tmp_path / f"{name}.key")

    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3)
    expired = files("expired", past)
    assert load_cert(expired.cert.read_bytes()).not_valid_after_utc < (
        dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
    live = files("live", None)

    ok = cluster.etcdctl("member", "list", tls=live, endpoints=cluster.client_url("m1"))
    assert ok.returncode == 0, ok.stderr
    log = cluster.state_dir / "members" / "m1" / "etcd.log"
    seen = len(log.read_bytes())
    refused = cluster.etcdctl("--command-timeout=2s", "member", "list", tls=expired,
                              endpoints=cluster.client_url("m1"))
    assert refused.returncode != 0
    assert tls_refused(refused.stderr), refused.stderr
    assert "started" not in refused.stdout
    wait_for(lambda: b"certificate has expired" in log.read_bytes()[seen:], 10,
             "m1 to log why it rejected the handshake")


# ---- usage errors: exit 2, nothing written -------------------------------------------


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["issue", "-bogus", "app"], "--bogus"),
        (["issue", "app", "extra"], "extra"),
        (["root-issue", "stray"], "stray"),
        (["issue"], "USER"),
        (["issue", "-ttl=24x", "app"], "-ttl"),
        (["issue", "-ttl=24", "app"], "-ttl"),
        (["issue", "-ttl=", "app"], "-ttl"),
        (["issue", "-ttl=0", "app"], "-ttl"),
        (["issue", "-ttl=-24h", "app"], "-ttl"),
        (["issue", "-ttl=500ms", "app"], "-ttl"),
        (["issue", "-ttl=h", "app"], "-ttl"),
        (["issue", "-ttl=99999999999h", "app"], "-ttl"),
        (["issue", "-output=yaml", "app"], "--output"),
        (["root-issue", "-output=pem"], "--output"),
        (["issue", "root"], "USER"),
        (["issue", ""], "USER"),
        (["issue", "../evil"], "USER"),
        (["issue", "a b"], "USER"),
        (["issue", "x" * 64], "USER"),
    ],
)
def test_bad_usage_exits_2_and_writes_nothing(cluster: Cluster, tmp_path: Path,
                                              args: list[str], names: str) -> None:
    r = ckecli(cluster.config_path, *args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert names in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_bad_output_file_usage_writes_no_files(cluster: Cluster, tmp_path: Path) -> None:
    r = ckecli(cluster.config_path, "issue", "-ttl=forever", "-output=file", "app", cwd=tmp_path)
    assert r.returncode == 2
    assert "-ttl" in r.stderr
    assert list(tmp_path.iterdir()) == []


# ---- no cluster needed; CA problems name the file -----------------------------------


def _config(root: Path, state_dir: Path) -> Path:
    path = root / "ckeetcd.toml"
    path.write_text(f'[cluster]\nname = "off"\nstate_dir = "{state_dir}"\n\n'
                    '[[members]]\nname = "m1"\naddress = "127.0.0.77"\n')
    return path


def test_issue_needs_only_the_ca(tmp_path: Path) -> None:
    """No member runs at the configured address: signing is local. (The installed
    console script, in a process of its own; the cases below run in-process.)"""
    ca = ensure_ca(tmp_path / "state" / "pki", "off")
    config = _config(tmp_path, tmp_path / "state")
    r = ckecli(config, "issue", "-ttl=24h", "app")
    assert r.returncode == 0, r.stderr
    assert_pair(json.loads(r.stdout), ca.cert_pem, "app", dt.timedelta(hours=24))
    assert r.stderr == ""


def test_a_certificate_outliving_the_ca_is_issued_with_a_warning(tmp_path: Path) -> None:
    ca = ensure_ca(tmp_path / "state" / "pki", "off")
    config = _config(tmp_path, tmp_path / "state")
    r = run_cli("ckecli", "etcd", "issue", "-ttl=300000h", "app", env=cli_env(config))
    assert r.returncode == 0, r.stderr
    assert "outlives the CA" in r.stderr
    assert_pair(json.loads(r.stdout), ca.cert_pem, "app", dt.timedelta(hours=300000))


def test_missing_ca_exits_1_naming_the_file(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path / "state")
    for args in (["root-issue"], ["issue", "app"]):
        r = run_cli("ckecli", "etcd", *args, env=cli_env(config))
        assert r.returncode == 1
        assert str(tmp_path / "state" / "pki" / "ca.crt") in r.stderr
        assert "ckeetcd run" in r.stderr
        assert r.stdout == ""


def test_ca_key_without_read_access_exits_1_naming_the_key(tmp_path: Path) -> None:
    """Run as nobody with the CA cert readable but ca.key root-only (0600)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as another user")
    # tmp_path's parents are 0700, and the machine's /tmp is not ours: a dir in the
    # checkout (ignored by git), whose parents another user can traverse.
    root = REPO / ".test-perm" / f"{os.getpid()}-{secrets.token_hex(4)}"
    root.mkdir(parents=True)
    try:
        root.parent.chmod(0o755)
        root.chmod(0o755)
        ensure_ca(root / "state" / "pki", "off")
        (root / "state").chmod(0o755)
        (root / "state" / "pki").chmod(0o755)
        config = _config(root, root / "state")
        config.chmod(0o644)
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
               str(BIN / "ckecli"), "etcd", "issue", "app", "--config", str(config)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=60,
                           env=cli_env(config))
        assert r.returncode == 1, r.stderr
        assert f"{root / 'state' / 'pki' / 'ca.key'}: permission denied" in r.stderr
        assert r.stdout == ""
    finally:
        shutil.rmtree(root)
        with contextlib.suppress(OSError):  # another worker's dir may still be there
            root.parent.rmdir()


def test_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[cluster]\nname = 'x'\n")
    r = run_cli("ckecli", "etcd", "issue", "app", env=cli_env(config))
    assert r.returncode == 2
    assert "cluster.state_dir" in r.stderr

"""The CA is never replaced by accident, and a damaged one is named, not traced back.

- a CA key deleted under a running daemon: the restart refuses (`ca_key_missing`,
  exit 78, which systemd does not restart), ca.crt is untouched, the members keep
  serving; the key put back, the daemon carries on;
- a fresh state dir next to a running cluster (members answer with our CA's
  certificates): no new CA either;
- ckeetcd.pki.ca_action as a table; every branch through daemon_ca in-process;
- a CA key that does not match ca.crt, a ca.crt that is not a CA, garbage and
  unreadable files: the daemon and the CLI name the file(s), exit 78/1/2;
- `ca import` of a bad file exits 2 and writes nothing; over another CA it needs
  --force; a `--no-key` import is told apart from a key that vanished.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog
from cryptography import x509
from structlog.testing import capture_logs

from ckeetcd.cli.main import main
from ckeetcd.core.config import Config, load_config
from ckeetcd.loop.daemonca import EXIT_REFUSED
from ckeetcd.loop.startup import daemon_ca
from ckeetcd.pki import (
    CA_CERT_MISSING,
    CA_CREATE,
    CA_FINISH,
    CA_FOLLOW,
    CA_KEY_MISSING,
    CA_LOAD,
    CA_MISSING,
    CAFacts,
    ca_action,
    create_ca,
    ensure_ca,
)
from tests.harness import Cluster, cli_env, names, wait_for
from tests.inproc import run_cli

# ---- the decision ------------------------------------------------------------------------


def test_ca_action_table() -> None:
    def f(cert: bool = False, key: bool = False, expected: bool = False, client: bool = False,
          election: bool = False, boot: bool = True, cluster: tuple[str, ...] = ()) -> CAFacts:
        return CAFacts(cert=cert, key=key, key_expected=expected, client_cert=client,
                       election=election, bootstrapper=boot, cluster=cluster)
    data = ("members/m1/data",)
    cases = [
        (f(cert=True, key=True), CA_LOAD),
        (f(cert=True, key=True, election=True, boot=False), CA_LOAD),
        (f(), CA_CREATE),
        (f(election=True), CA_CREATE),
        (f(election=True, boot=False), CA_MISSING),
        (f(election=True, boot=False, cluster=data), CA_MISSING),  # a new follower: import
        (f(cluster=data), CA_KEY_MISSING),  # the whole CA gone from an existing cluster
        (f(client=True), CA_KEY_MISSING),
        (f(expected=True), CA_KEY_MISSING),
        (f(cert=True), CA_KEY_MISSING),  # one daemon: its key vanished
        (f(cert=True, client=True, expected=True), CA_KEY_MISSING),
        (f(cert=True, client=True, election=True), CA_FOLLOW),  # a --no-key import
        (f(cert=True, client=True, election=True, boot=False), CA_FOLLOW),
        (f(cert=True, client=True, election=True, expected=True), CA_KEY_MISSING),
        (f(cert=True, election=True), CA_MISSING),
        (f(key=True), CA_FINISH),  # a first start that crashed between the two writes
        (f(key=True, cluster=data), CA_CERT_MISSING),
        (f(key=True, client=True), CA_CERT_MISSING),
        (f(key=True, expected=True), CA_CERT_MISSING),
        (f(key=True, election=True, boot=False), CA_CERT_MISSING),
    ]
    for facts, want in cases:
        assert ca_action(facts) == want, facts


# ---- daemon_ca in-process -------------------------------------------------------------------


def node(root: Path, daemon: str = "", election: bool = False, address: str = "127.0.0.77",
         name: str = "test") -> Config:
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "ckeetcd.toml"
    extra = f'[daemon]\nid = "{daemon}"\nelection = true\n\n' if election else ""
    cfg.write_text(f'[cluster]\nname = "{name}"\nstate_dir = "state"\n\n{extra}'
                   f'[[members]]\nname = "n1"\naddress = "{address}"\n')
    return load_config(cfg)


def pki_files(config: Config) -> dict[str, bytes]:
    d = config.cluster.pki_dir
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.exists() else {}


def refused(config: Config, event: str) -> dict[str, object]:
    before = pki_files(config)
    with capture_logs() as logs:
        assert daemon_ca(config, structlog.get_logger()) is None
    assert names(logs) == [event], logs
    assert pki_files(config) == before  # nothing written, nothing replaced
    return dict(logs[0])


def test_a_vanished_key_is_refused_not_replaced(tmp_path: Path) -> None:
    c = node(tmp_path / "a")
    assert daemon_ca(c, structlog.get_logger()) is not None
    (c.cluster.pki_dir / "ca.key").unlink()
    e = refused(c, "ca_key_missing")
    assert e["missing"] == [str(c.cluster.pki_dir / "ca.key")]
    assert "ckeetcd ca import" in str(e["hint"]) and "backup" in str(e["hint"])


def test_the_whole_ca_gone_from_an_existing_cluster_is_refused(tmp_path: Path) -> None:
    for sign in ("history.jsonl", "members/n1/data", "cluster-formed.json"):
        c = node(tmp_path / sign.replace("/", "-"))
        state = c.cluster.state_dir
        if sign.endswith("data"):
            (state / sign).mkdir(parents=True)
        else:
            state.mkdir()
            (state / sign).write_text('{"x": 1}\n')
        e = refused(c, "ca_key_missing")
        assert str(state / sign) in e["cluster"], e  # type: ignore[operator]
        assert not c.cluster.pki_dir.exists()


def test_a_lost_ca_certificate_is_refused_with_where_a_copy_is(tmp_path: Path) -> None:
    c = node(tmp_path / "a")
    assert daemon_ca(c, structlog.get_logger()) is not None
    copy = c.cluster.state_dir / "members" / "n1" / "tls" / "ca.crt"
    copy.parent.mkdir(parents=True)
    shutil.copy(c.cluster.pki_dir / "ca.crt", copy)
    (c.cluster.pki_dir / "ca.crt").unlink()
    e = refused(c, "ca_cert_missing")
    assert str(copy) in str(e["hint"])


def test_a_first_start_that_stopped_between_key_and_certificate_finishes(tmp_path: Path) -> None:
    c = node(tmp_path / "a")
    assert daemon_ca(c, structlog.get_logger()) is not None
    for name in ("ca.crt", "ca.key.expected", "daemon-root.crt", "daemon-root.key"):
        (c.cluster.pki_dir / name).unlink()
    key = (c.cluster.pki_dir / "ca.key").read_bytes()
    with capture_logs() as logs:
        trust = daemon_ca(c, structlog.get_logger())
    assert trust is not None and names(logs) == ["ca_certificate_completed"]
    ca = trust.client
    assert (c.cluster.pki_dir / "ca.key").read_bytes() == key  # the same key, kept
    assert ca.cert.public_key() == ca.key.public_key()


def test_create_ca_never_overwrites(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "pki", "x")
    with pytest.raises(FileExistsError):
        create_ca(tmp_path / "pki", "x")
    (tmp_path / "pki" / "ca.crt").unlink()
    with pytest.raises(FileExistsError):  # a key is there: writing a new one fails
        create_ca(tmp_path / "pki", "x")
    assert ensure_ca(tmp_path / "other", "x").cert != ca.cert


def test_follower_without_key_on_purpose_versus_a_key_that_vanished(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = node(tmp_path / "n1", "n1", election=True)
    second = node(tmp_path / "n2", "n2", election=True)
    full, public = tmp_path / "full.json", tmp_path / "public.json"
    assert main(["ca", "export", "--out", str(full), "--config", str(first.path)]) == 0
    assert main(["ca", "export", "--no-key", "--out", str(public),
                 "--config", str(first.path)]) == 0
    # imported with the key, which then vanishes: a loss, not a follower
    assert main(["ca", "import", str(full), "--config", str(second.path)]) == 0
    (second.cluster.pki_dir / "ca.key").unlink()
    refused(second, "ca_key_missing")
    # the operator decides this host follows: a --no-key import of the same CA (no --force)
    assert main(["ca", "import", str(public), "--config", str(second.path)]) == 0
    with capture_logs() as logs:
        assert daemon_ca(second, structlog.get_logger()) is not None
    assert names(logs) == ["ca_key_absent"]
    capsys.readouterr()


def test_damaged_ca_files_are_named(tmp_path: Path) -> None:
    c = node(tmp_path / "a")
    assert daemon_ca(c, structlog.get_logger()) is not None
    d = c.cluster.pki_dir
    good = pki_files(c)
    other = ensure_ca(tmp_path / "other", "test")

    def case(name: str, content: bytes, event: str, *named: str) -> None:
        (d / name).write_bytes(content)
        e = refused(c, event)
        for n in named:
            assert str(d / n) in str(e["error"]), e
        assert "Traceback" not in json.dumps(e)
        for k, v in good.items():
            (d / k).write_bytes(v)

    case("ca.key", b"garbage\n", "ca_unusable", "ca.key")
    case("ca.crt", b"garbage\n", "ca_unusable", "ca.crt")
    case("ca.crt", good["daemon-root.crt"], "ca_unusable", "ca.crt")  # not a CA
    case("ca.key", (tmp_path / "other" / "ca.key").read_bytes(), "ca_key_mismatch",
         "ca.key", "ca.crt")
    case("ca.crt", other.cert_pem, "ca_key_mismatch", "ca.key", "ca.crt")


def test_a_damaged_daemon_certificate_is_reissued(tmp_path: Path) -> None:
    c = node(tmp_path / "a")
    trust = daemon_ca(c, structlog.get_logger())
    assert trust is not None
    ca, d = trust.client, c.cluster.pki_dir
    other = ensure_ca(tmp_path / "other", "test").issue("root", dt.timedelta(hours=1))
    for name, content, reason in (
            ("daemon-root.crt", b"junk", "not a PEM certificate"),
            ("daemon-root.key", b"junk", "not an unencrypted PEM private key"),
            ("daemon-root.crt", other.cert_pem, "not signed by the CA"),
            ("daemon-root.key", other.key_pem, "does not belong to it")):
        (d / name).write_bytes(content)
        with capture_logs() as logs:
            assert daemon_ca(c, structlog.get_logger()) is not None
        assert names(logs) == ["daemon_cert_reissued"] and reason in logs[0]["reason"]
        cert = x509.load_pem_x509_certificate((d / "daemon-root.crt").read_bytes())
        cert.verify_directly_issued_by(ca.cert)


# ---- real daemon, real etcd ------------------------------------------------------------------


def test_a_deleted_ca_key_stops_the_restart_and_nothing_is_replaced(
        make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    c = make_cluster()
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    pki = c.state_dir / "pki"
    ca_crt, ca_key = (pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes()
    (pki / "ca.key").unlink()  # while the daemon runs
    assert c.stop_daemon() == 0
    mark = c.mark()
    p = c.start_daemon()
    assert p.wait(120) == EXIT_REFUSED
    [e] = c.events("ca_key_missing", since=mark)
    assert e["missing"] == [str(pki / "ca.key")]
    assert "ckeetcd ca import" in e["hint"]
    assert (pki / "ca.crt").read_bytes() == ca_crt and not (pki / "ca.key").exists()
    assert c.events(since=mark)[-1]["event"] == "ca_key_missing"  # nothing after it
    assert c.healthy_names() == {"m1", "m2", "m3"}  # the members never noticed

    # A fresh state dir next to the running cluster: its members answer with
    # certificates of our CA, so no second CA is made there either.
    fresh = node(tmp_path / "fresh", address=c.address_of("m1"))
    e2 = refused(fresh, "ca_key_missing")
    assert any("serves a certificate of ckeetcd CA test" in s
               for s in e2["cluster"]), e2  # type: ignore[attr-defined]
    assert not fresh.cluster.pki_dir.exists()

    (pki / "ca.key").write_bytes(ca_key)  # brought back from a backup
    (pki / "ca.key").chmod(0o600)
    mark = c.mark()
    c.start_daemon()
    wait_for(lambda: c.events("cycle", since=mark), 60, "a cycle", abort=c.daemon_died)
    c.wait_healthy(["m1", "m2", "m3"])
    assert (pki / "ca.crt").read_bytes() == ca_crt
    log = c.daemon_log.read_text().splitlines()[mark:]
    assert not [line for line in log if "CERTIFICATE_VERIFY_FAILED" in line]
    assert not c.events("quorum_lost", since=mark)
    c.stop_daemon(signal.SIGTERM)


# ---- the CLI ---------------------------------------------------------------------------------


def signing_node(tmp_path: Path) -> Config:
    c = node(tmp_path / "a")
    assert daemon_ca(c, structlog.get_logger()) is not None
    return c


def test_root_issue_refuses_a_ca_key_of_another_ca(tmp_path: Path) -> None:
    c = signing_node(tmp_path)
    d = c.cluster.pki_dir
    ensure_ca(tmp_path / "other", "test")
    shutil.copy(tmp_path / "other" / "ca.key", d / "ca.key")
    for args in (["root-issue"], ["issue", "app"], ["root-issue", "-output=file"]):
        r = run_cli("ckecli", "etcd", *args, env=cli_env(c.path), cwd=tmp_path)
        assert r.returncode == 1, r
        assert f"{d / 'ca.key'} does not belong to {d / 'ca.crt'}" in r.stderr
        assert r.stdout == "" and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("etcd-*"))


def test_signing_commands_name_a_damaged_ca_file(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    c = signing_node(tmp_path)
    d = c.cluster.pki_dir
    good = pki_files(c)
    cases = [("ca.key", b"garbage\n", "ca.key"), ("ca.crt", b"garbage\n", "ca.crt"),
             ("ca.crt", good["daemon-root.crt"], "ca.crt")]
    for name, content, named in cases:
        (d / name).write_bytes(content)
        for args in (["etcd", "root-issue"], ["etcd", "issue", "app"]):
            r = run_cli("ckeetcd", *args, env=cli_env(c.path))
            assert r.returncode == 1 and str(d / named) in r.stderr, (name, args, r)
            assert r.stdout == "" and "Traceback" not in r.stderr
        out = tmp_path / "bundle.json"
        assert main(["ca", "export", "--out", str(out), "--config", str(c.path)]) == 1
        assert str(d / named) in capsys.readouterr().err and not out.exists()
        (d / name).write_bytes(good[name])


REPO = Path(__file__).resolve().parent.parent
UNREADABLE_CASES = """
import json, sys
from pathlib import Path
from tests.inproc import run_cli
done = []
for name, args in json.loads(sys.argv[2]):
    path = Path(sys.argv[1]) / name
    path.chmod(0o000)
    try:
        r = run_cli("ckeetcd", *args)
    finally:
        path.chmod(0o600)
    done.append((r.returncode, r.stdout + r.stderr))
print(json.dumps(done))
"""


def test_unreadable_pki_files_are_named(tmp_path: Path) -> None:
    """Root without CAP_DAC_OVERRIDE reads a mode-000 file like anyone else: refused."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    probe = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr!r}")
    c = signing_node(tmp_path)
    d = c.cluster.pki_dir
    cases = [(name, [*args, "--config", str(c.path)], code)
             for name in ("ca.key", "ca.crt", "daemon-root.key")
             for args, code in ((["run", "--log-format", "json"], EXIT_REFUSED),
                                (["etcd", "root-issue"], 1),
                                (["ca", "export", "--out", str(tmp_path / "o.json")], 1))
             if name != "daemon-root.key" or args[0] == "run"]
    # one process without the capabilities runs every case in turn (tests/inproc.py)
    r = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                        sys.executable, "-c", UNREADABLE_CASES, str(d),
                        json.dumps([(name, args) for name, args, _ in cases])],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    for (name, args, code), (got, text) in zip(cases, json.loads(r.stdout), strict=True):
        assert got == code, (name, args, text)
        assert str(d / name) in text and "ermission denied" in text, (name, args, text)
        assert "Traceback" not in text


def test_ca_import_of_a_bad_file_exits_2_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = signing_node(tmp_path / "src")
    good = tmp_path / "good.json"
    assert main(["ca", "export", "--out", str(good), "--config", str(source.path)]) == 0
    bundle = json.loads(good.read_text())
    other = ensure_ca(tmp_path / "other", "test")
    cases = {
        "missing.json": None,
        "empty.json": "",
        "text.json": "hello",
        "list.json": "[1, 2]",
        "format.json": json.dumps({**bundle, "format": "x"}),
        "cluster.json": json.dumps({**bundle, "cluster": "prod"}),
        "number.json": json.dumps({**bundle, "ca_certificate": 5}),
        "nocert.json": json.dumps({k: v for k, v in bundle.items() if k != "ca_certificate"}),
        "garbage-cert.json": json.dumps({**bundle, "ca_certificate": "garbage"}),
        "garbage-key.json": json.dumps({**bundle, "ca_key": "garbage"}),
        "other-key.json": json.dumps({**bundle,
                                      "ca_key": (tmp_path / "other" / "ca.key").read_text()}),
        "not-a-ca.json": json.dumps({**bundle, "ca_certificate": other.issue(
            "root", dt.timedelta(hours=1)).cert_pem.decode()}),
        "neither.json": json.dumps({k: v for k, v in bundle.items() if k != "ca_key"}),
    }
    target = node(tmp_path / "dst")
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        assert main(["ca", "import", str(path), "--config", str(target.path)]) == 2, name
        err = capsys.readouterr().err
        assert f"FILE: {path}: " in err, (name, err)
        assert not target.cluster.state_dir.exists(), name


def test_ca_import_over_another_ca_needs_force(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    source = signing_node(tmp_path / "src")
    bundle = tmp_path / "b.json"
    assert main(["ca", "export", "--out", str(bundle), "--config", str(source.path)]) == 0
    target = signing_node(tmp_path / "dst")  # has a CA of its own
    before = pki_files(target)
    assert main(["ca", "import", str(bundle), "--config", str(target.path)]) == 2
    assert "different CA" in capsys.readouterr().err
    assert pki_files(target) == before
    assert main(["ca", "import", str(bundle), "--config", str(target.path), "--force"]) == 0
    assert pki_files(target)["ca.crt"] == pki_files(source)["ca.crt"]


def test_the_probe_sees_nothing_where_nothing_serves_tls(tmp_path: Path) -> None:
    from ckeetcd.pki.tlsprobe import issuer_names

    assert issuer_names("127.0.0.1", 1, timeout=2.0) == []  # nothing listens on port 1

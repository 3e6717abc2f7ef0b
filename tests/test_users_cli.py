"""`ckecli etcd user-add | user-remove` on a real TLS + RBAC cluster, with real etcdctl and jq.

One cluster serves the whole module; every test works on its own user names.
Auth changes reach each member through raft, so checks made through another
member poll with a deadline.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from ckeetcd.cli.errors import UsageError
from ckeetcd.cli.users import check_add, check_remove, covers_registry, grant_conflict
from ckeetcd.etcd.rbac import prefixes_overlap, ranges_overlap
from ckeetcd.pki import TLSFiles
from tests.harness import Cluster, ckecli, cli_env, running_cluster, wait_for


@pytest.fixture(scope="module")
def cluster(module_tmp_path: Path, real_etcd: str) -> Iterator[Cluster]:
    yield from running_cluster(module_tmp_path)


def issue_like_the_seed(cluster: Cluster, user: str, cwd: Path) -> TLSFiles:
    """CKE's lines for an application certificate, verbatim with USER filled in."""
    script = f"""
CERT=$(ckecli etcd issue -ttl=24h -output=json {user})
echo "$CERT" | jq -r .ca_certificate > etcd-ca.crt
echo "$CERT" | jq -r .certificate > {user}.crt
echo "$CERT" | jq -r .private_key > {user}.key
"""
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                       text=True, env=cli_env(cluster.config_path), cwd=cwd, timeout=60)
    assert r.returncode == 0, r.stderr
    return TLSFiles(ca=cwd / "etcd-ca.crt", cert=cwd / f"{user}.crt", key=cwd / f"{user}.key")


def ok(r: subprocess.CompletedProcess[str]) -> bool:
    return r.returncode == 0


def denied(r: subprocess.CompletedProcess[str]) -> bool:
    return r.returncode != 0 and "permission denied" in r.stderr


def rbac_state(cluster: Cluster) -> dict[str, str]:
    """Every user and role with its grants, as etcdctl shows them."""
    users = cluster.etcdctl("user", "list")
    roles = cluster.etcdctl("role", "list")
    assert users.returncode == 0 and roles.returncode == 0, users.stderr + roles.stderr
    state = {f"user {u}": cluster.etcdctl("user", "get", u).stdout for u in users.stdout.split()}
    state |= {f"role {r}": cluster.etcdctl("role", "get", r).stdout for r in roles.stdout.split()}
    return state


# ---- pure checks: which prefixes reach /registry/ -------------------------------------


@pytest.mark.parametrize(
    ("prefix", "covers"),
    [
        ("/", True),
        ("", True),  # a grant on "" would be the whole keyspace
        ("/r", True),
        ("/reg", True),
        ("/registry", True),
        ("/registry/", True),
        ("/registry/foo", True),
        ("/registry/pods/default/", True),
        ("/app/", False),
        ("/registry0", False),  # prefix_end("/registry/"): just past the range
        ("/registrx", False),  # [/registrx, /registry): ends right before it
        ("/registry-old/", False),  # "-" sorts before "/"
        ("/registry.", False),
        ("registry/", False),  # no leading slash: another key
        ("\x00", False),
        ("\U0010ffff", False),
    ],
)
def test_covers_registry(prefix: str, covers: bool) -> None:
    assert covers_registry(prefix) is covers


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ((b"a", b"b"), (b"b", b"c"), False),  # half-open: touching is not sharing
        ((b"a", b"c"), (b"b", b"d"), True),
        ((b"b", b"c"), (b"a", b"z"), True),
        ((b"x", b"\0"), (b"a", b"b"), False),  # "\0": to the end of the keyspace
        ((b"x", b"\0"), (b"y", b"z"), True),
        ((b"", b"\0"), (b"\xff", b"\0"), True),
    ],
)
def test_ranges_overlap(a: tuple[bytes, bytes], b: tuple[bytes, bytes], overlap: bool) -> None:
    assert ranges_overlap(a, b) is overlap
    assert ranges_overlap(b, a) is overlap


@given(st.text(alphabet="/ab\x00\xff\u0101", max_size=6),
       st.text(alphabet="/ab\x00\xff\u0101", max_size=6))
def test_prefix_ranges_overlap_iff_one_prefix_starts_the_other(a: str, b: str) -> None:
    ea, eb = a.encode(), b.encode()
    assert prefixes_overlap(a, b) is (ea.startswith(eb) or eb.startswith(ea))


@pytest.mark.parametrize(
    ("args", "refusal"),
    [
        (("app", "/app/"), None),
        (("kube-apiserver", "/registry/"), None),
        (("a.b_c-9", "/a/"), None),
        (("app", "/registry/x"), "PREFIX: '/registry/x' overlaps '/registry/'"),
        (("app", "/"), "PREFIX: '/' overlaps"),
        (("app", "/ckeetcd/csr/"), "PREFIX: '/ckeetcd/csr/' overlaps '/ckeetcd/'"),
        (("app", "/ck"), "PREFIX: '/ck' overlaps '/ckeetcd/'"),
        (("kube-apiserver", "/c"), "USER: 'kube-apiserver' is managed by ckeetcd itself"),
        (("kube-apiserver", "/other/"), "USER: 'kube-apiserver' is managed by ckeetcd itself"),
        (("app", "/" + "a" * 4096), "PREFIX: '/aaaa"),
        (("app", "/ckeetcd-app/"), None),
        (("app", ""), "PREFIX: must not be empty"),
        (("root", "/r/"), "USER: 'root' is managed by ckeetcd"),
        (("", "/x/"), "USER: must not be empty"),
        (("-x", "/x/"), "USER: '-x' is not a valid etcd user name"),
        (("a/b", "/x/"), "USER: 'a/b' is not a valid"),
    ],
)
def test_check_add(args: tuple[str, str], refusal: str | None) -> None:
    if refusal is None:
        check_add(*args)
        return
    with pytest.raises(UsageError) as e:
        check_add(*args)
    assert str(e.value).startswith(refusal)


@pytest.mark.parametrize(
    ("user", "refusal"),
    [("app", None), ("root", "USER: 'root'"), ("kube-apiserver", "USER: 'kube-apiserver'"),
     ("", "USER: must not be empty"), ("a b", "USER: 'a b'")],
)
def test_check_remove(user: str, refusal: str | None) -> None:
    if refusal is None:
        check_remove(user)
        return
    with pytest.raises(UsageError) as e:
        check_remove(user)
    assert str(e.value).startswith(refusal)


# ---- the seed: user-add, issue, use --------------------------------------------------


def test_app_user_reads_and_writes_its_prefix_only(cluster: Cluster, tmp_path: Path) -> None:
    r = ckecli(cluster.config_path, "user-add", "app", "/app/")
    assert r.returncode == 0, r.stderr
    assert 'user app: readwrite on ["/app/", "/app0")' in r.stdout
    tls = issue_like_the_seed(cluster, "app", tmp_path)

    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    want = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=24)
    assert abs(cert.not_valid_after_utc - want) < dt.timedelta(seconds=90)

    wait_for(lambda: ok(cluster.etcdctl("put", "/app/k", "v1", tls=tls)), 15,
             "app to write under /app/")
    for name in cluster.live_names():  # every member serves it, not only the one that applied it
        get = cluster.etcdctl("get", "/app/k", "--print-value-only", tls=tls,
                              endpoints=cluster.client_url(name))
        assert get.returncode == 0 and get.stdout.strip() == "v1", (name, get.stderr)
    assert ok(cluster.etcdctl("get", "/app/", "--prefix", tls=tls))

    assert denied(cluster.etcdctl("put", "/registry/pods/x", "v", tls=tls))
    assert denied(cluster.etcdctl("get", "/registry/", "--prefix", tls=tls))
    assert denied(cluster.etcdctl("put", "/k", "v", tls=tls))
    assert denied(cluster.etcdctl("get", "/", "--prefix", tls=tls))
    assert denied(cluster.etcdctl("put", "/app", "v", tls=tls))  # the prefix is "/app/"
    assert denied(cluster.etcdctl("user", "list", tls=tls))


def test_user_add_is_idempotent(cluster: Cluster) -> None:
    first = ckecli(cluster.config_path, "user-add", "idem", "/idem/")
    assert first.returncode == 0, first.stderr
    assert "user-add idem" in first.stdout
    before = rbac_state(cluster)
    assert "[/idem/, /idem0)" in before["role idem"]
    assert "idem" in before["user idem"]

    again = ckecli(cluster.config_path, "user-add", "idem", "/idem/")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ['user idem: readwrite on ["/idem/", "/idem0") (no change)']
    assert rbac_state(cluster) == before


def test_user_add_never_silently_replaces_an_existing_grant(cluster: Cluster) -> None:
    """A typo in PREFIX must not cut an application off: refused, unless --replace."""
    assert ckecli(cluster.config_path, "user-add", "mover", "/old/").returncode == 0
    before = rbac_state(cluster)
    r = ckecli(cluster.config_path, "user-add", "mover", "/new/")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "USER: 'mover' already exists with readwrite on" in r.stderr
    assert '"/old/"' in r.stderr and '"/new/"' in r.stderr and "--replace" in r.stderr
    assert rbac_state(cluster) == before  # nothing changed

    r = ckecli(cluster.config_path, "user-add", "--replace", "mover", "/new/")
    assert r.returncode == 0, r.stderr
    assert "role-revoke mover" in r.stdout
    assert 'user mover: replaced readwrite on ["/old/", "/old0")' in r.stdout
    assert 'user mover: readwrite on ["/new/", "/new0")' in r.stdout
    role = cluster.etcdctl("role", "get", "mover").stdout
    assert "[/new/, /new0)" in role and "/old/" not in role
    # the same grant again is a no-op, with or without --replace
    again = ckecli(cluster.config_path, "user-add", "-replace", "mover", "/new/")
    assert again.returncode == 0 and "(no change)" in again.stdout, again.stderr


@pytest.mark.parametrize(("have", "prefix", "replace", "refused"), [
    (None, "/a/", False, False),  # a new user
    ((), "/a/", False, False),  # a role without permissions loses nothing
    (((2, b"/a/", b"/a0"),), "/a/", False, False),  # the same grant
    (((2, b"/a/", b"/a0"),), "/b/", False, True),
    (((2, b"/a/", b"/a0"),), "/b/", True, False),
    (((0, b"/a/", b"/a0"),), "/a/", False, True),  # read only -> readwrite is a change
    (((2, b"/a/", b"/a0"), (0, b"/x", b"")), "/a/", False, True),  # an extra grant would go
])
def test_grant_conflict(have: tuple[tuple[int, bytes, bytes], ...] | None, prefix: str,
                        replace: bool, refused: bool) -> None:
    want = ((2, prefix.encode(), prefix[:-1].encode() + bytes([ord(prefix[-1]) + 1])),)
    why = grant_conflict("app", prefix, have, want, replace)
    assert bool(why) is refused
    if refused:
        assert why.startswith("USER: 'app' already exists with ") and "--replace" in why


def test_user_remove_then_the_certificate_is_denied(cluster: Cluster, tmp_path: Path) -> None:
    assert ckecli(cluster.config_path, "user-add", "gone", "/gone/").returncode == 0
    tls = issue_like_the_seed(cluster, "gone", tmp_path)
    wait_for(lambda: ok(cluster.etcdctl("put", "/gone/k", "v", tls=tls)), 15,
             "gone to write under /gone/")

    r = ckecli(cluster.config_path, "user-remove", "gone")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["user-delete gone", "role-delete gone", "user gone: removed"]
    for name in cluster.live_names():
        def refuses(member: str = name) -> bool:
            return denied(cluster.etcdctl("get", "/gone/k", tls=tls,
                                          endpoints=cluster.client_url(member)))

        wait_for(refuses, 15, f"{name} to refuse the removed user")
    state = rbac_state(cluster)
    assert "user gone" not in state and "role gone" not in state

    again = ckecli(cluster.config_path, "user-remove", "gone")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "user gone: not present (no change)"


# ---- refusals and bad usage: exit 2, nothing changed ------------------------------------


BAD = [
    (["user-add"], "USER"),
    (["user-add", "app2"], "PREFIX"),
    (["user-add", "app2", "/app2/", "extra"], "extra"),
    (["user-add", "-bogus", "app2", "/app2/"], "--bogus"),
    (["user-add", "root", "/root/"], "USER"),
    (["user-add", "", "/x/"], "USER"),
    (["user-add", "a b", "/x/"], "USER"),
    (["user-add", "../x", "/x/"], "USER"),
    (["user-add", "_x", "/x/"], "USER"),
    (["user-add", "x" * 64, "/x/"], "USER"),
    (["user-add", "app2", ""], "PREFIX"),
    (["user-add", "app2", "/"], "PREFIX"),
    (["user-add", "app2", "/reg"], "PREFIX"),
    (["user-add", "app2", "/registry"], "PREFIX"),
    (["user-add", "app2", "/registry/"], "PREFIX"),
    (["user-add", "app2", "/registry/foo"], "PREFIX"),
    (["user-add", "kube-apiserver", "/other/"], "USER: 'kube-apiserver'"),
    (["user-add", "app2", "/a\udcff"], "PREFIX: '/a\\udcff' is not valid UTF-8"),
    (["user-add", "root\n", "/zz/"], "USER: 'root\\n' must not contain control"),
    (["user-remove", "root\n"], "USER: 'root\\n' must not contain control"),
    (["user-remove"], "USER"),
    (["user-remove", "root"], "USER"),
    (["user-remove", "kube-apiserver"], "USER"),
    (["user-remove", ""], "USER"),
    (["user-remove", "app2", "extra"], "extra"),
]


def test_bad_input_exits_2_and_changes_nothing(cluster: Cluster) -> None:
    assert ckecli(cluster.config_path, "user-add", "keep", "/keep/").returncode == 0
    before = rbac_state(cluster)
    assert "user kube-apiserver" in before and "user keep" in before
    for args, names in BAD:
        r = ckecli(cluster.config_path, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert names in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stdout == "", args
    after = rbac_state(cluster)
    assert after == before


def test_kube_apiserver_keeps_registry(cluster: Cluster) -> None:
    """kube-apiserver may be (re)declared on /registry/ only, which is already in place."""
    r = ckecli(cluster.config_path, "user-add", "kube-apiserver", "/registry/")
    assert r.returncode == 0, r.stderr
    assert "(no change)" in r.stdout


def _variant(cluster: Cluster, path: Path, top: str = "", members: str = "",
             tail: str = "") -> Path:
    """A config for the same cluster (same state dir and CA) that only the CLI reads."""
    head, sep, rest = cluster.config_path.read_text().partition("[[members]]")
    path.write_text(f"{top}\n{head}{members}\n{sep}{rest}\n{tail}")
    return path


def test_users_the_daemon_manages_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    config = _variant(cluster, tmp_path / "svc.toml",
                      tail='[[users]]\nname = "svc"\nprefix = "/svc/"\n')
    before = rbac_state(cluster)
    for args, names in ((["user-add", "svc", "/elsewhere/"], "PREFIX"),
                        (["user-remove", "svc"], "USER")):
        r = ckecli(config, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert names in r.stderr and str(config) in r.stderr, r.stderr
    pruning = _variant(cluster, tmp_path / "prune.toml", tail="[rbac]\nprune_users = true\n")
    r = ckecli(pruning, "user-add", "stray", "/stray/")
    assert r.returncode == 2 and "prune_users" in r.stderr, r.stderr
    assert rbac_state(cluster) == before


def test_first_answering_member_is_used(cluster: Cluster, tmp_path: Path) -> None:
    """A desired member that is down (listed first) does not stop the command."""
    dead = f'[[members]]\nname = "dead"\naddress = "{cluster.block}.200"\n'
    config = _variant(cluster, tmp_path / "dead.toml", members=dead)
    r = ckecli(config, "user-add", "viadead", "/viadead/")
    assert r.returncode == 0, r.stderr
    assert "user-add viadead" in r.stdout


def test_no_member_answers_exits_1(cluster: Cluster, tmp_path: Path) -> None:
    config = tmp_path / "nobody.toml"
    config.write_text(f'[cluster]\nname = "test"\nstate_dir = "{cluster.state_dir}"\n\n'
                      f'[daemon]\nrpc_timeout = 1.0\n\n'
                      f'[[members]]\nname = "x1"\naddress = "{cluster.block}.201"\n\n'
                      f'[[members]]\nname = "x2"\naddress = "{cluster.block}.202"\n')
    r = ckecli(config, "user-add", "nowhere", "/nowhere/")
    assert r.returncode == 1
    assert "no member answered" in r.stderr
    assert f"{cluster.block}.201" in r.stderr and f"{cluster.block}.202" in r.stderr

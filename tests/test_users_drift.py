"""[[users]] in the config: created by the daemon, drift repaired, others left alone."""

from __future__ import annotations

from tests.harness import Cluster, wait_for

USERS = '[[users]]\nname = "app"\nprefix = "/app/"\n'


def _role(c: Cluster, name: str) -> str:
    return c.etcdctl("role", "get", name).stdout


def test_configured_user_created_and_repaired(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c = make_cluster(extra=USERS)
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    wait_for(lambda: "/app/" in _role(c, "app"), 20, "role app with /app/")
    assert "app" in c.etcdctl("user", "get", "app").stdout

    # an operator's own user is left alone (no pruning by default)
    assert c.etcdctl("user", "add", "manual", "--no-password").returncode == 0

    # deleted user comes back
    assert c.etcdctl("user", "delete", "app").returncode == 0
    wait_for(lambda: "Roles: app" in c.etcdctl("user", "get", "app").stdout, 20,
             "user app re-created with its role")

    # a changed grant is put back
    assert c.etcdctl("role", "revoke-permission", "app", "/app/", "--prefix").returncode == 0
    assert c.etcdctl("role", "grant-permission", "app", "readwrite", "/other/",
                     "--prefix").returncode == 0
    wait_for(lambda: "/app/" in _role(c, "app") and "/other/" not in _role(c, "app"), 20,
             "grant on /app/ only")

    # the app certificate works under /app/ only
    tls = c.client_cert("app")
    assert c.etcdctl("put", "/app/k", "v", tls=tls).returncode == 0
    denied = c.etcdctl("put", "/registry/k", "v", tls=tls)
    assert denied.returncode != 0 and "permission denied" in denied.stderr
    assert "manual" in c.etcdctl("user", "list").stdout


def test_prune_users_removes_unlisted(make_cluster) -> None:  # type: ignore[no-untyped-def]
    c = make_cluster(extra="[rbac]\nprune_users = true\n\n" + USERS)
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    assert c.etcdctl("user", "add", "manual", "--no-password").returncode == 0
    wait_for(lambda: "manual" not in c.etcdctl("user", "list").stdout, 20, "manual pruned")
    users = c.etcdctl("user", "list").stdout.split()
    assert sorted(users) == ["app", "kube-apiserver", "root"]

"""Config loading and validation: pure table tests, then the CLI on bad files.

A bad config must give a message naming the file and the dotted key, exit
status 2, and change nothing: no state dir, no certificate, no etcd process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ckeetcd.core.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    ConfigError,
    load_config,
    parse_config,
)
from tests.inproc import run_cli

CONFIG = Path("/srv/ckeetcd/conf/ckeetcd.toml")


def base(**overrides: Any) -> dict[str, Any]:
    """A valid parsed config (3 members); `overrides` replace top-level tables."""
    data: dict[str, Any] = {
        "cluster": {"name": "prod", "state_dir": "/var/lib/ckeetcd"},
        "members": [
            {"name": "n1", "address": "10.0.0.1"},
            {"name": "n2", "address": "10.0.0.2"},
            {"name": "n3", "address": "10.0.0.3"},
        ],
    }
    data.update(overrides)
    return data


def with_member(i: int, **fields: Any) -> dict[str, Any]:
    """base() with members[i] changed; a field set to None is removed."""
    data = base()
    member = {**data["members"][i], **fields}
    data["members"][i] = {k: v for k, v in member.items() if v is not None}
    return data


def problems(data: dict[str, Any], path: Path = CONFIG) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as e:
        parse_config(data, path)
    return [(p.key, p.message) for p in e.value.problems]


# ---- valid configs -------------------------------------------------------------
def test_minimal_config_gets_the_documented_defaults() -> None:
    c = parse_config(base(), CONFIG)
    assert c.cluster.name == "prod"
    assert c.cluster.state_dir == Path("/var/lib/ckeetcd")
    assert (c.cluster.client_port, c.cluster.peer_port) == (2379, 2380)
    assert [m.name for m in c.members] == ["n1", "n2", "n3"]
    assert c.client_url(c.members[0]) == "https://10.0.0.1:2379"
    assert c.peer_url(c.members[0]) == "https://10.0.0.1:2380"
    assert c.etcd.binary == ""
    assert (c.etcd.heartbeat_interval_ms, c.etcd.election_timeout_ms) == (100, 1000)
    assert c.daemon.interval == 10.0 and c.daemon.probe_interval == 3.0
    assert c.apiserver.etcd_servers_file is None and c.apiserver.reload_command == ()
    assert c.users == () and c.prune_users is False


def test_config_objects_are_frozen() -> None:
    c = parse_config(base(), CONFIG)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.cluster.name = "other"  # type: ignore[misc]
    assert isinstance(c.members, tuple)


@pytest.mark.parametrize(
    ("state_dir", "expected"),
    [
        ("/abs/state", "/abs/state"),
        ("state", "/srv/ckeetcd/conf/state"),
        ("../state", "/srv/ckeetcd/state"),
        ("./a/b", "/srv/ckeetcd/conf/a/b"),
    ],
)
def test_relative_paths_resolve_against_the_config_folder(state_dir: str, expected: str) -> None:
    data = base(cluster={"name": "prod", "state_dir": state_dir})
    data["apiserver"] = {"etcd_servers_file": state_dir + "/servers"}
    c = parse_config(data, CONFIG)
    assert Path(os.path.normpath(c.cluster.state_dir)) == Path(expected)
    assert c.apiserver.etcd_servers_file is not None
    assert Path(os.path.normpath(c.apiserver.etcd_servers_file)) == Path(expected) / "servers"


@pytest.mark.parametrize(
    ("binary", "expected"),
    [
        ("", ""),
        ("etcd", "etcd"),  # a bare name is looked up on PATH when started
        ("/usr/bin/etcd", "/usr/bin/etcd"),
        ("bin/etcd", "/srv/ckeetcd/conf/bin/etcd"),
    ],
)
def test_etcd_binary(binary: str, expected: str) -> None:
    c = parse_config(base(etcd={"binary": binary}), CONFIG)
    assert c.etcd.binary == expected


@pytest.mark.parametrize(
    ("address", "stored", "client_url"),
    [
        ("10.0.0.9", "10.0.0.9", "https://10.0.0.9:2379"),
        ("127.0.1.1", "127.0.1.1", "https://127.0.1.1:2379"),
        ("fd00::9", "fd00::9", "https://[fd00::9]:2379"),
        ("fd00:0:0::9", "fd00::9", "https://[fd00::9]:2379"),  # normalized
    ],
)
def test_member_addresses(address: str, stored: str, client_url: str) -> None:
    c = parse_config(with_member(0, address=address), CONFIG)
    assert c.members[0].address == stored
    assert c.client_url(c.members[0]) == client_url


def test_every_section_parses() -> None:
    data = base(
        cluster={"name": "prod", "state_dir": "/s", "client_port": 12379, "peer_port": 12380},
        etcd={"binary": "/opt/etcd", "heartbeat_interval_ms": 50, "election_timeout_ms": 500,
              "quota_backend_bytes": 8 << 30, "extra_args": ["--auto-compaction-retention=1"]},
        daemon={"interval": 2, "probe_interval": 0.2, "rpc_timeout": 1.5, "start_timeout": 30,
                "learner_timeout": 90},
        apiserver={"etcd_servers_file": "/etc/kubernetes/etcd-servers",
                   "reload_command": ["systemctl", "reload", "kube-apiserver"]},
        users=[{"name": "cilium", "prefix": "/cilium/"}],
        rbac={"prune_users": True},
    )
    c = parse_config(data, CONFIG)
    assert c.client_url(c.members[1]) == "https://10.0.0.2:12379"
    assert c.etcd.quota_backend_bytes == 8 << 30
    assert c.etcd.extra_args == ("--auto-compaction-retention=1",)
    assert c.daemon.interval == 2 and c.daemon.learner_timeout == 90
    assert c.apiserver.reload_command == ("systemctl", "reload", "kube-apiserver")
    assert [(u.name, u.prefix) for u in c.users] == [("cilium", "/cilium/")]
    assert c.prune_users is True


REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "example.toml"


def test_local_config_is_valid() -> None:
    local = load_config(REPO / "config" / "local.toml")
    assert [m.address for m in local.members] == ["127.0.1.1", "127.0.1.2", "127.0.1.3"]
    assert local.cluster.state_dir.resolve() == (REPO / ".ckeetcd").resolve()


def known_keys() -> dict[str, set[str]]:
    """Every key the validator knows, per table, read from its own "unknown key" message."""
    probe: dict[str, Any] = base(
        zz=1,
        cluster={**base()["cluster"], "zz": 1},
        members=[{**base()["members"][0], "zz": 1}],
        users=[{"name": "u", "prefix": "/u/", "zz": 1}],
        **{t: {"zz": 1} for t in ("etcd", "daemon", "apiserver", "rbac", "kubernetes",
                                  "backup", "tls", "ssh", "metrics", "maintenance")},
    )
    out: dict[str, set[str]] = {}
    for key, message in problems(probe):
        assert key.endswith("zz") and "(known: " in message, (key, message)
        table = key[:-len(".zz")].replace("[0]", "") if "." in key else ""
        out[table] = set(message.split("(known: ")[1].rstrip(")").split(", "))
    return out


def documented_keys(text: str) -> dict[str, set[str]]:
    """`key =` lines of the example per table, commented-out settings (`#key =`) included."""
    out: dict[str, set[str]] = {"": set()}
    table = ""
    for line in text.splitlines():
        line = line[1:] if line.startswith("#") and not line.startswith("# ") else line
        line = line.strip()
        if line.startswith("["):
            table = line.strip("[]")
            out.setdefault(table, set())
            out[""].add(table)
        elif "=" in line and not line.startswith("#"):
            out[table].add(line.split("=")[0].strip())
    return out


def test_example_documents_every_key() -> None:
    documented = documented_keys(EXAMPLE.read_text())
    for table, keys in known_keys().items():
        assert keys <= documented.get(table, set()), f"[{table}] undocumented: " \
            f"{sorted(keys - documented.get(table, set()))}"


def test_example_is_valid_as_shipped_and_with_every_option_on() -> None:
    c = load_config(EXAMPLE)
    assert [m.name for m in c.members] == ["cp1", "cp2", "cp3"]
    assert c.kubernetes is None and c.users == ()
    defaults = parse_config(base(), EXAMPLE)
    assert (c.etcd, c.daemon.interval, c.backup, c.tls) == \
        (defaults.etcd, defaults.daemon.interval, defaults.backup, defaults.tls)

    text = EXAMPLE.read_text()
    uncommented = "\n".join(
        line[1:] if line.startswith("#") and not line.startswith("# ") and line != "#"
        else line for line in text.splitlines())
    data = tomllib.loads(uncommented)
    c = parse_config(data, EXAMPLE)
    assert c.kubernetes is not None and c.kubernetes.name == "cke-etcd"
    assert [u.name for u in c.users] == ["cilium"]
    assert c.apiserver.reload_command == ("systemctl", "reload", "kube-apiserver")


# ---- invalid configs: every problem names its dotted key ----------------------
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown top-level key", base(etcdd={}), "etcdd", "unknown key"),
    ("unknown cluster key", base(cluster={"name": "p", "state_dir": "/s", "nmae": "x"}),
     "cluster.nmae", "unknown key"),
    ("missing cluster", {"members": base()["members"]}, "cluster", "missing"),
    ("missing cluster name", base(cluster={"state_dir": "/s"}), "cluster.name", "missing"),
    ("bad cluster name", base(cluster={"name": "a b", "state_dir": "/s"}), "cluster.name",
     "not a valid name"),
    ("empty state dir", base(cluster={"name": "p", "state_dir": ""}), "cluster.state_dir",
     "must not be empty"),
    ("port too big", base(cluster={"name": "p", "state_dir": "/s", "client_port": 70000}),
     "cluster.client_port", "must be between 1 and 65535 (got 70000)"),
    ("port as string", base(cluster={"name": "p", "state_dir": "/s", "peer_port": "2380"}),
     "cluster.peer_port", "must be an integer"),
    ("same ports", base(cluster={"name": "p", "state_dir": "/s", "client_port": 2380}),
     "cluster.peer_port", "must differ"),
    ("no members", {"cluster": base()["cluster"]}, "members", "missing"),
    ("empty members", base(members=[]), "members", "at least one"),
    ("members as a table", base(members={"name": "n1"}), "members", "array of tables"),
    ("unknown member key", with_member(1, adress="10.0.0.9"), "members[1].adress", "unknown key"),
    ("missing member name", with_member(1, name=None), "members[1].name", "missing"),
    ("missing member address", with_member(2, address=None), "members[2].address", "missing"),
    ("bad member name", with_member(0, name="-n1"), "members[0].name", "not a valid name"),
    ("duplicate name", with_member(2, name="n1"), "members[2].name", "duplicate name"),
    ("duplicate address", with_member(1, address="10.0.0.1"), "members[1].address",
     "duplicate address"),
    ("hostname address", with_member(0, address="node1.example.com"), "members[0].address",
     "not an IPv4 or IPv6 address"),
    ("bad octet", with_member(0, address="10.0.0.256"), "members[0].address",
     "not an IPv4 or IPv6 address"),
    ("address with port", with_member(0, address="10.0.0.1:2379"), "members[0].address",
     "not an IPv4 or IPv6 address"),
    ("unspecified address", with_member(0, address="0.0.0.0"), "members[0].address",
     "cannot be a member address"),
    ("multicast address", with_member(0, address="224.0.0.1"), "members[0].address",
     "cannot be a member address"),
    ("address as number", with_member(0, address=10), "members[0].address", "must be a string"),
    ("short election timeout", base(etcd={"heartbeat_interval_ms": 300}),
     "etcd.election_timeout_ms", "at least 5 x"),
    ("extra_args not a list", base(etcd={"extra_args": "--foo"}), "etcd.extra_args",
     "list of strings"),
    ("unknown daemon key", base(daemon={"intervall": 1}), "daemon.intervall", "unknown key"),
    ("zero interval", base(daemon={"interval": 0}), "daemon.interval",
     "must be between 0.1 and 3600 seconds (got 0)"),
    ("boolean as number", base(daemon={"probe_interval": True}), "daemon.probe_interval",
     "must be a number"),
    ("reload_command as string", base(apiserver={"reload_command": "systemctl reload x"}),
     "apiserver.reload_command", "list of strings"),
    ("user named root", base(users=[{"name": "root", "prefix": "/"}]), "users[0].name",
     "managed by ckeetcd"),
    ("user with empty prefix", base(users=[{"name": "app", "prefix": ""}]), "users[0].prefix",
     "must not be empty"),
    ("duplicate user", base(users=[{"name": "app", "prefix": "/a/"},
                                   {"name": "app", "prefix": "/b/"}]),
     "users[1].name", "duplicate user"),
    ("prune_users not boolean", base(rbac={"prune_users": "yes"}), "rbac.prune_users",
     "true or false"),
    ("paused not boolean", base(daemon={"paused": 1}), "daemon.paused", "true or false"),
    ("metrics on a public address", base(metrics={"address": "10.0.0.1:9379"}),
     "metrics.address", "allow_remote"),
    ("metrics without a port", base(metrics={"address": "127.0.0.1"}), "metrics.address",
     "HOST:PORT"),
    ("metrics on a host name", base(metrics={"address": "localhost:9379"}), "metrics.address",
     "HOST:PORT"),
    ("metrics IPv6 without brackets", base(metrics={"address": "::1:9379"}),
     "metrics.address", "HOST:PORT"),
    ("metrics port too big", base(metrics={"address": "127.0.0.1:70000"}), "metrics.address",
     "HOST:PORT"),
    ("unknown metrics key", base(metrics={"port": 9379}), "metrics.port", "unknown key"),
    ("defrag threshold of 1", base(maintenance={"defrag_threshold": 1}),
     "maintenance.defrag_threshold", "at least 0 and below 1"),
    ("negative defrag threshold", base(maintenance={"defrag_threshold": -0.1}),
     "maintenance.defrag_threshold", "at least 0 and below 1"),
    ("min_db_size not an integer", base(maintenance={"min_db_size": 1.5}),
     "maintenance.min_db_size", "must be an integer"),
    ("user prefix reaching ckeetcd's own keys",
     base(users=[{"name": "app", "prefix": "/cke"}]), "users[0].prefix", "overlaps /ckeetcd/"),
    ("daemon certificate too short", base(tls={"daemon_cert_lifetime": "10s"}),
     "tls.daemon_cert_lifetime", "at least 30s"),
    ("daemon certificate lifetime not a duration", base(tls={"daemon_cert_lifetime": 90}),
     "tls.daemon_cert_lifetime", "Go duration"),
]


@pytest.mark.parametrize(("metrics", "host_port"), [
    ({}, None),
    ({"address": ""}, None),
    ({"address": "127.0.0.1:9379"}, ("127.0.0.1", 9379)),
    ({"address": "127.3.4.5:0"}, ("127.3.4.5", 0)),
    ({"address": "[::1]:9379"}, ("::1", 9379)),
    ({"address": "10.0.0.1:9379", "allow_remote": True}, ("10.0.0.1", 9379)),
    ({"address": "[fd00::1]:9379", "allow_remote": True}, ("fd00::1", 9379)),
])
def test_metrics_address(metrics: dict[str, Any], host_port: tuple[str, int] | None) -> None:
    assert parse_config(base(metrics=metrics), CONFIG).metrics.host_port == host_port


def test_daemon_cert_lifetime() -> None:
    assert parse_config(base(), CONFIG).tls.daemon_cert_lifetime == dt.timedelta(days=90)
    c = parse_config(base(tls={"daemon_cert_lifetime": "45s"}), CONFIG)
    assert c.tls.daemon_cert_lifetime == dt.timedelta(seconds=45)


def test_operability_defaults() -> None:
    c = parse_config(base(), CONFIG)
    assert c.daemon.paused is False and c.metrics.address == ""
    assert (c.maintenance.defrag_threshold, c.maintenance.min_db_size) == (0.5, 100 * 2**20)
    c = parse_config(base(daemon={"paused": True}, maintenance={"defrag_threshold": 0}), CONFIG)
    assert c.daemon.paused and c.maintenance.defrag_threshold == 0.0


@pytest.mark.parametrize(("data", "key", "message"), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invalid_config_names_the_key(data: dict[str, Any], key: str, message: str) -> None:
    found = problems(data)
    assert any(k == key and message in m for k, m in found), found


def test_every_problem_is_reported_at_once() -> None:
    data = with_member(1, name="n1", address="10.0.0.1")
    data["cluster"]["bogus"] = 1
    data["daemon"] = {"interval": -1}
    keys = {k for k, _ in problems(data)}
    assert {"cluster.bogus", "members[1].name", "members[1].address", "daemon.interval"} <= keys


# ---- full matches, control characters, ranges (issue 11, items 4, 5, 11) --------
# Every string key of the schema that a value can be given for: (path to set, key named).
def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`data` with the dotted `path` (members[0].name, ssh.user) set to `value`."""
    *tables, last = path.split(".")
    node: Any = data
    for t in tables:
        if t.endswith("]"):
            name, index = t[:-1].split("[")
            node = node.setdefault(name, [{}])[int(index)]
        else:
            node = node.setdefault(t, {})
    node[last] = value
    return data


SSH_MEMBERS = {"runtime": "ssh", "identity_file": "id", "known_hosts": "kh"}


def ssh_base() -> dict[str, Any]:
    """base() with every member over SSH (so the [ssh] keys matter)."""
    data = base(ssh={"identity_file": "id", "known_hosts": "kh"})
    data["cluster"]["runtime"] = "ssh"
    return data


NAME_KEYS = ["cluster.name", "members[0].name", "users[0].name", "daemon.id",
             "daemon.bootstrapper", "ssh.user"]
STRING_KEYS = [
    *NAME_KEYS, "cluster.state_dir", "cluster.runtime", "members[0].address", "members[0].runtime",
    "members[0].ssh_host", "users[0].prefix", "etcd.binary", "apiserver.etcd_servers_file",
    "kubernetes.kubeconfig", "kubernetes.namespace", "kubernetes.name",
    "kubernetes.cluster_domain", "backup.dir", "metrics.address", "tls.member_cert_lifetime",
    "ssh.identity_file", "ssh.known_hosts", "ssh.etcd_binary", "ssh.data_root",
    "ssh.member_service",
]
GOOD = {"cluster.name": "prod", "members[0].name": "n1", "users[0].name": "app",
        "daemon.id": "n1", "daemon.bootstrapper": "n1", "ssh.user": "root",
        "cluster.state_dir": "/var/lib/ckeetcd", "cluster.runtime": "ssh",
        "members[0].address": "10.0.0.1", "members[0].runtime": "ssh",
        "members[0].ssh_host": "cp1.example.com", "users[0].prefix": "/app/",
        "etcd.binary": "/usr/bin/etcd", "apiserver.etcd_servers_file": "/run/servers",
        "kubernetes.kubeconfig": "/etc/kube.conf", "kubernetes.namespace": "kube-system",
        "kubernetes.name": "cke-etcd", "kubernetes.cluster_domain": "cluster.local",
        "backup.dir": "/var/backups", "metrics.address": "127.0.0.1:9379",
        "tls.member_cert_lifetime": "8760h", "ssh.identity_file": "/etc/id",
        "ssh.known_hosts": "/etc/kh", "ssh.etcd_binary": "/usr/bin/etcd",
        "ssh.data_root": "/var/lib/m", "ssh.member_service": "process"}


def test_the_good_values_of_the_string_table_are_good() -> None:
    data = ssh_base()
    data["users"] = [{"name": "app", "prefix": "/app/"}]
    for key in STRING_KEYS:
        _set(data, key, GOOD[key])
    parse_config(data, CONFIG)


def with_key(key: str, value: Any) -> dict[str, Any]:
    data = ssh_base()
    data["users"] = [{"name": "app", "prefix": "/app/"}]
    return _set(data, key, value)


@pytest.mark.parametrize("key", STRING_KEYS)
@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\0", "\x1b[31m", "\u2028", "\u202e"],
                         ids=["newline", "crlf", "nul", "escape", "line-separator", "bidi"])
def test_no_string_key_takes_a_control_character(key: str, suffix: str) -> None:
    """`$` matched before a final newline: names, hosts and paths took `node1\n`."""
    found = problems(with_key(key, GOOD[key] + suffix))
    assert [k for k, _ in found] == [key], found
    [(_, message)] = found
    assert "\n" not in message and "\0" not in message and "\x1b" not in message
    assert "\u2028" not in message and "\u202e" not in message


@pytest.mark.parametrize("key", NAME_KEYS)
@pytest.mark.parametrize("value", ["x y", "-x", "a" * 64, "é", "x/y", "x:y", ""])
def test_names_are_matched_whole(key: str, value: str) -> None:
    if value == "" and key.startswith("daemon."):
        return  # "" is the documented default (the host name; the first member)
    found = problems(with_key(key, value))
    assert key in [k for k, _ in found], found


@pytest.mark.parametrize("item", ["--log-level=info\n", "--a=\0", "--x=\x7f"])
def test_list_items_take_no_control_characters(item: str) -> None:
    for key in ("etcd.extra_args", "apiserver.reload_command"):
        found = problems(with_key(key, ["--ok", item]))
        assert [k for k, _ in found] == [f"{key}[1]"], found


def _numeric_keys() -> list[tuple[str, str, bool]]:
    """(table, key, integer) of every int/float field in the schema's sections."""
    from ckeetcd.core import config as c

    sections = {"cluster": c.ClusterConfig, "etcd": c.EtcdConfig, "daemon": c.DaemonConfig,
                "backup": c.BackupConfig, "ssh": c.SSHConfig,
                "maintenance": c.MaintenanceConfig, "apiserver": c.ApiserverConfig}
    return [(table, f.name, f.type == "int") for table, cls in sections.items()
            for f in dataclasses.fields(cls) if f.type in ("int", "float")]


NUMERIC = _numeric_keys()


def test_the_schema_has_the_numeric_keys_we_think() -> None:
    assert len(NUMERIC) == 22, NUMERIC  # with maintenance.removed_data_keep, log_max_bytes
    assert ("apiserver", "drain_seconds", False) in NUMERIC
    assert ("daemon", "lease_ttl", True) in NUMERIC
    assert ("maintenance", "defrag_threshold", False) in NUMERIC


def _refused(table: str, key: str, value: Any) -> str:
    data = base(**{table: {key: value}})
    if table == "cluster":
        data["cluster"] = {**base()["cluster"], key: value}
    found = [(k, m) for k, m in problems(data) if k == f"{table}.{key}"]
    assert found, f"{table}.{key} = {value!r} was accepted"
    return found[0][1]


@pytest.mark.parametrize(("table", "key", "integer"), NUMERIC,
                         ids=[f"{t}.{k}" for t, k, _ in NUMERIC])
def test_every_number_has_a_range_named_in_the_error(table: str, key: str,
                                                     integer: bool) -> None:
    """NaN and inf were accepted (no cycle for 39 s, 13 snapshots in 15 s), and
    lease_ttl = 999999999999."""
    for value in ([999999999999, -999999999999, 10**30] if integer else
                  [math.nan, math.inf, -math.inf, 1e300, -1e300, 999999999999]):
        message = _refused(table, key, value)
        assert "between" in message or "below" in message, message
        assert "got" in message, message
    if integer:
        assert "must be an integer" in _refused(table, key, math.nan)


@pytest.mark.parametrize(("table", "key", "integer"), NUMERIC,
                         ids=[f"{t}.{k}" for t, k, _ in NUMERIC])
def test_every_documented_range_is_the_enforced_one(table: str, key: str,
                                                    integer: bool) -> None:
    """example.toml names each range; the bounds in the error are accepted, and a
    step past each is refused."""
    message = _refused(table, key, 10**15)
    bounds = re.search(r"(?:between|at least) (\S+) and (?:below )?(\S+)", message)
    assert bounds, message
    lo, hi = (float(b) for b in bounds.groups())
    step = 1 if integer else min(0.01, lo / 2 or 0.01)
    below_hi = "below" in message
    data = base(**{table: {key: int(lo) if integer else lo}})
    if table == "cluster":
        data["cluster"] = {**base()["cluster"], key: int(lo) if integer else lo}
        data["cluster"]["peer_port" if key == "client_port" else "client_port"] = 7
    if (table, key) == ("etcd", "heartbeat_interval_ms"):
        data["etcd"]["election_timeout_ms"] = 50000
    if (table, key) == ("etcd", "election_timeout_ms"):
        data["etcd"]["heartbeat_interval_ms"] = 10
    parse_config(data, CONFIG)
    top = hi - step if below_hi else hi
    for value in (lo - step, hi + step):
        _refused(table, key, int(value) if integer else value)
    data = base(**{table: {key: int(top) if integer else top}})
    if table == "cluster":
        data["cluster"] = {**base()["cluster"], key: int(top)}
    if (table, key) == ("etcd", "election_timeout_ms"):
        data["etcd"]["heartbeat_interval_ms"] = 100
    if (table, key) == ("etcd", "heartbeat_interval_ms"):
        data["etcd"]["election_timeout_ms"] = 50000
    if (table, key) == ("daemon", "rpc_timeout"):
        data["daemon"]["election"] = False
    parse_config(data, CONFIG)


RANGES: list[tuple[str, dict[str, Any], str, str]] = [
    ("lease_ttl huge", base(daemon={"lease_ttl": 999999999999}), "daemon.lease_ttl",
     "must be between 2 and 3600 seconds (got 999999999999)"),
    ("rpc_timeout NaN", base(daemon={"rpc_timeout": math.nan}), "daemon.rpc_timeout",
     "(got nan)"),
    ("backup interval inf", base(backup={"interval": math.inf}), "backup.interval",
     "must be 0 (off) or between 1 and 2678400 seconds (got inf)"),
    ("defrag threshold NaN", base(maintenance={"defrag_threshold": math.nan}),
     "maintenance.defrag_threshold", "(got nan)"),
    ("election timeout etcd refuses", base(etcd={"election_timeout_ms": 99999999999}),
     "etcd.election_timeout_ms", "between 50 and 50000 ms (etcd refuses more)"),
    ("election timeout just past etcd's limit", base(etcd={"election_timeout_ms": 50001}),
     "etcd.election_timeout_ms", "between 50 and 50000"),
    ("heartbeat that cannot fit", base(etcd={"heartbeat_interval_ms": 10001,
                                             "election_timeout_ms": 50000}),
     "etcd.heartbeat_interval_ms", "between 10 and 10000 ms"),
    ("quota too small", base(etcd={"quota_backend_bytes": 1}), "etcd.quota_backend_bytes",
     "0 (off) or between 16777216 and 8589934592 bytes"),
    ("huge hex integer", base(daemon={"lease_ttl": 1 << 20000}), "daemon.lease_ttl",
     "an integer of 20001 bits"),
    ("rpc timeout outlasting the lease", base(daemon={"election": True, "lease_ttl": 3,
                                                      "rpc_timeout": 2}),
     "daemon.rpc_timeout", "at most half of daemon.lease_ttl"),
    ("member certificate longer than 10 years", base(tls={"member_cert_lifetime": "87601h"}),
     "tls.member_cert_lifetime", "must be at most 87600h (got '87601h')"),
    ("daemon certificate of 100 years", base(tls={"daemon_cert_lifetime": "876000h"}),
     "tls.daemon_cert_lifetime", "must be at most 87600h"),
    ("member certificate of a second", base(tls={"member_cert_lifetime": "1s",
                                                 "member_cert_renew_before": "1ms"}),
     "tls.member_cert_lifetime", "at least 60s"),
    ("broadcast member", with_member(0, address="255.255.255.255"), "members[0].address",
     "the broadcast address"),
    ("link-local IPv4 member", with_member(0, address="169.254.10.20"), "members[0].address",
     "link-local"),
    ("link-local IPv6 member", with_member(0, address="fe80::1"), "members[0].address",
     "link-local"),
    ("link-local IPv6 at the end of fe80::/10", with_member(0, address="febf::1"),
     "members[0].address", "link-local"),
    ("zoned IPv6 member", with_member(0, address="fe80::1%eth0"), "members[0].address",
     "zone index"),
    ("zoned global IPv6 member", with_member(0, address="fd00::1%2"), "members[0].address",
     "zone index"),
    ("class E member", with_member(0, address="240.1.2.3"), "members[0].address",
     "reserved"),
    ("this-network member", with_member(0, address="0.1.2.3"), "members[0].address",
     "this network"),
    ("IPv4-mapped member", with_member(0, address="::ffff:10.0.0.9"), "members[0].address",
     "write 10.0.0.9"),
    ("IPv6 unspecified member", with_member(0, address="::"), "members[0].address",
     "unspecified"),
    ("ssh_host with a zone", with_member(0, ssh_host="fe80::1%eth0"), "members[0].ssh_host",
     "not a host name"),
    ("ssh_host with an empty label", with_member(0, ssh_host="a..b"), "members[0].ssh_host",
     "not a host name"),
    ("ssh_host too long", with_member(0, ssh_host=".".join(["a" * 63] * 5)),
     "members[0].ssh_host", "not a host name"),
    ("metrics port in full-width digits", base(metrics={"address": "127.0.0.1:\uff19\uff13"}),
     "metrics.address", "HOST:PORT"),
    ("cluster domain with an empty label", base(kubernetes={"cluster_domain": "a..b"}),
     "kubernetes.cluster_domain", "not a DNS domain"),
]


@pytest.mark.parametrize(("data", "key", "message"), [c[1:] for c in RANGES],
                         ids=[c[0] for c in RANGES])
def test_ranges_and_addresses(data: dict[str, Any], key: str, message: str) -> None:
    found = problems(data)
    assert any(k == key and message in m for k, m in found), found


@pytest.mark.parametrize("address", ["10.0.0.9", "127.0.1.1", "fd00::9", "2001:db8::1",
                                     "::1", "192.168.0.255", "100.64.0.1"])
def test_ordinary_member_addresses_pass(address: str) -> None:
    parse_config(with_member(0, address=address), CONFIG)


def test_election_off_lets_rpc_timeout_outlast_a_lease() -> None:
    c = parse_config(base(daemon={"lease_ttl": 3, "rpc_timeout": 2}), CONFIG)
    assert c.daemon.rpc_timeout == 2


def test_a_huge_value_is_echoed_short() -> None:
    """A 50 MB cluster.name was echoed whole."""
    for key in ("cluster.name", "members[0].address", "members[0].ssh_host", "users[0].prefix",
                "kubernetes.namespace", "metrics.address", "tls.member_cert_lifetime",
                "ssh.data_root", "cluster.runtime"):
        big = "/" + "x" * 5_000_000 + " "
        found = problems(with_key(key, big))
        assert [k for k, _ in found] == [key], found
        [(_, message)] = found
        assert len(message) < 400, (key, message[:500])
        assert "5000002 characters" in message, (key, message)
    found = problems(base(cluster={**base()["cluster"], "k" * 1_000_000: 1}))
    assert all(len(k) < 100 for k, _ in found), [k[:100] for k, _ in found]


def test_unknown_keys_with_odd_characters_are_quoted() -> None:
    found = problems(base(cluster={**base()["cluster"], "a\nb": 1, "x.y": 2}))
    assert ('cluster."a\\nb"', found[0][1]) in found, found
    assert any(k == 'cluster."x.y"' for k, _ in found), found


def test_duration_errors_name_the_key_once() -> None:
    """`tls.member_cert_lifetime: tls.member_cert_lifetime: ...`"""
    with pytest.raises(ConfigError) as e:
        parse_config(base(tls={"member_cert_lifetime": "10y"}), CONFIG)
    [p] = e.value.problems
    assert str(p).count("tls.member_cert_lifetime") == 1, str(p)
    assert str(p) == (f'{CONFIG}: tls.member_cert_lifetime: invalid duration "10y": unknown '
                      'unit "y" (Go syntax, e.g. 24h, 90m, 1h30m, 500ms)')


def test_an_integer_too_long_to_convert_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[daemon]\nlease_ttl = " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    [p] = e.value.problems
    assert p.file == str(path) and "out of range" in p.message and len(p.message) < 200


def test_problem_text_is_file_key_why() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(with_member(2, name="n1"), CONFIG)
    assert str(e.value.problems[0]) == (
        f"{CONFIG}: members[2].name: duplicate name 'n1' (also members[0].name)")


SYNTAX: list[tuple[str, str, str]] = [
    ("unterminated string", '[cluster]\nname = "local\nstate_dir = "s"\n', "cluster.name"),
    ("bare word value", "[cluster]\nname = local\n", "cluster.name"),
    ("unclosed header", '[cluster\nname = "x"\n', "cluster"),
    ("key set twice", '[cluster]\nname = "a"\nname = "b"\n', "cluster.name"),
    ("bad value in second member",
     '[[members]]\nname = "a"\naddress = "10.0.0.1"\n[[members]]\nname = "b"\n'
     "address = 10.0.0.2\n", "members[1].address"),
    ("unclosed array", '[etcd]\nextra_args = ["--a",\n  "--b"\n  x]\n', "etcd.extra_args"),
    ("table declared twice", '[cluster]\nname = "a"\n[cluster]\n', "cluster"),
    ("quoted keys", '["cluster"]\n"name" = local\n', "cluster.name"),
    ("quoted array of tables", '[[members]]\n[[ "members" ]]\naddress = 10\n.1\n',
     "members[1].address"),
    ("a key that needs quotes", '[cluster]\n"a b" . c = x\n', 'cluster."a b".c'),
]


@pytest.mark.parametrize(("text", "key"), [c[1:] for c in SYNTAX], ids=[c[0] for c in SYNTAX])
def test_toml_syntax_error_names_file_line_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    [p] = e.value.problems
    assert (p.file, p.key) == (str(path), key)
    assert p.message.startswith("TOML syntax error:") and "line" in p.message


def test_unreadable_files(tmp_path: Path) -> None:
    cases = [(tmp_path / "missing.toml", "No such file"), (tmp_path, "Is a directory")]
    if os.geteuid() != 0:  # root reads a chmod 000 file anyway
        locked = tmp_path / "locked.toml"
        locked.write_text("[cluster]\n")
        locked.chmod(0)
        cases.append((locked, "Permission denied"))
    for path, why in cases:
        with pytest.raises(ConfigError) as e:
            load_config(path)
        [p] = e.value.problems
        assert p.file == str(path) and why in p.message, p
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe[cluster]\n")
    with pytest.raises(ConfigError) as e:
        load_config(binary)
    assert "not UTF-8" in e.value.problems[0].message


# ---- the CLI: exit 2, file and key named, nothing started or written ---------
VALID_TOML = """\
[cluster]
name = "cfgtest"
state_dir = "state"

[daemon]
probe_interval = 0.2

[[members]]
name = "m1"
address = "127.0.0.11"

[[members]]
name = "m2"
address = "127.0.0.12"

[[members]]
name = "m3"
address = "127.0.0.13"
"""

BAD_FILES: list[tuple[str, str, str]] = [
    ("unknown key", VALID_TOML.replace('name = "cfgtest"', 'name = "cfgtest"\nnmae = "x"'),
     "cluster.nmae"),
    ("missing name", VALID_TOML.replace('name = "m2"\n', ""), "members[1].name"),
    ("duplicate name", VALID_TOML.replace('name = "m3"', 'name = "m1"'), "members[2].name"),
    ("duplicate address", VALID_TOML.replace("127.0.0.12", "127.0.0.11"), "members[1].address"),
    ("bad address", VALID_TOML.replace("127.0.0.13", "127.0.0.300"), "members[2].address"),
    ("syntax error", VALID_TOML.replace('"127.0.0.12"', '"127.0.0.12'), "members[1].address"),
]


def ckeetcd(*args: str, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`ckeetcd ARGS` without $CKEETCD_CONFIG (and with `env`), in-process (tests/inproc.py)."""
    clean = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    return run_cli("ckeetcd", *args, env={**clean, **(env or {})}, cwd=cwd)


def etcd_processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text` (read-only /proc scan)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if text.encode() in cmdline and b"etcd" in cmdline and entry.name != str(os.getpid()):
                found.append(int(entry.name))
    return found


def tree(root: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime)
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize(("text", "key"), [c[1:] for c in BAD_FILES],
                         ids=[c[0] for c in BAD_FILES])
def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path, command: str, text: str,
                                                key: str) -> None:
    path = tmp_path / "ckeetcd.toml"
    path.write_text(text)
    r = ckeetcd(command, "--config", str(path), "--log-format", "json")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"{path}: {key}: " in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "state").exists(), "a bad config wrote the state dir"
    assert etcd_processes_mentioning(str(tmp_path)) == []


@pytest.mark.parametrize("command", ["check-config", "run", "status", "plan", "stop-members"])
def test_unreadable_config_exits_2(tmp_path: Path, command: str) -> None:
    for path, why in ((tmp_path / "nope.toml", "No such file"), (tmp_path, "Is a directory")):
        r = ckeetcd(command, "--config", str(path))
        assert r.returncode == 2, (command, r.stdout, r.stderr)
        assert str(path) in r.stderr and why in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_config_leaves_an_existing_state_dir_untouched(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "pki").mkdir(parents=True)
    (state / "history.jsonl").write_text('{"event": "earlier"}\n')
    before = tree(state)
    path = tmp_path / "ckeetcd.toml"
    path.write_text(VALID_TOML.replace('name = "m3"', 'name = "m1"'))
    r = ckeetcd("run", "--config", str(path))
    assert r.returncode == 2, r.stderr
    assert tree(state) == before


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "ckeetcd.toml"
    path.write_text(VALID_TOML)
    r = ckeetcd("check-config", "--config", str(path))
    assert r.returncode == 0, r.stderr
    assert str(path) in r.stdout and "m1, m2, m3" in r.stdout
    assert not (tmp_path / "state").exists(), "check-config wrote the state dir"


def test_every_problem_is_printed(tmp_path: Path) -> None:
    path = tmp_path / "ckeetcd.toml"
    path.write_text(VALID_TOML.replace("127.0.0.12", "127.0.0.11").replace('"m3"', '"m1"'))
    r = ckeetcd("check-config", "--config", str(path))
    assert r.returncode == 2
    assert f"{path}: members[1].address: " in r.stderr
    assert f"{path}: members[2].name: " in r.stderr


# ---- which file: --config, else $CKEETCD_CONFIG, else /etc/ckeetcd/ckeetcd.toml --
def test_config_flag_wins_over_environment(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(VALID_TOML)
    bad.write_text("this is not toml")
    r = ckeetcd("check-config", "--config", str(good), env={CONFIG_ENV: str(bad)})
    assert r.returncode == 0, r.stderr
    assert str(good) in r.stdout

    r = ckeetcd("check-config", env={CONFIG_ENV: str(bad)})
    assert r.returncode == 2 and str(bad) in r.stderr

    r = ckeetcd("check-config", env={CONFIG_ENV: str(good)})
    assert r.returncode == 0 and str(good) in r.stdout


def test_go_style_config_flag(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(VALID_TOML)
    r = ckeetcd("check-config", f"-config={good}")
    assert r.returncode == 0, r.stderr
    assert str(good) in r.stdout


def test_relative_config_path_is_relative_to_cwd(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "c.toml").write_text(VALID_TOML)
    r = ckeetcd("check-config", "--config", "etc/c.toml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(DEFAULT_CONFIG_PATH.exists(), reason="this machine has a real config")
def test_default_path_is_etc_ckeetcd() -> None:
    r = ckeetcd("check-config")
    assert r.returncode == 2
    assert str(DEFAULT_CONFIG_PATH) in r.stderr

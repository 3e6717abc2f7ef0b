"""[ssh], per-member runtime and the election keys: validation and the member unit."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from ckeetcd.core.config import ConfigError, parse_config
from ckeetcd.nodes import MemberSpec
from ckeetcd.nodes.ssh import SSHRuntime

CONFIG = Path("/etc/ckeetcd/ckeetcd.toml")
REPO = Path(__file__).resolve().parent.parent


def ssh_config(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "cluster": {"name": "p", "state_dir": "/s", "runtime": "ssh"},
        "members": [{"name": "cp1", "address": "10.0.0.1"},
                    {"name": "cp2", "address": "10.0.0.2", "ssh_host": "cp2.example.com"},
                    {"name": "cp3", "address": "10.0.0.3", "runtime": "local"}],
        "ssh": {"identity_file": "ssh/id", "known_hosts": "ssh/known_hosts"},
    }
    for key, value in over.items():
        data[key] = value
    return data


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as e:
        parse_config(data, CONFIG)
    return [(p.key, p.message) for p in e.value.problems]


def test_ssh_config_defaults_and_routing() -> None:
    c = parse_config(ssh_config(), CONFIG)
    assert [m.runtime for m in c.members] == ["ssh", "ssh", "local"]
    assert [m.node_host for m in c.members] == ["10.0.0.1", "cp2.example.com", "10.0.0.3"]
    assert c.ssh.identity_file == Path("/etc/ckeetcd/ssh/id")  # relative to the config
    assert c.ssh.data_root == "/var/lib/ckeetcd-member" and c.ssh.member_service == "process"
    assert c.election is True and c.bootstrapper == "cp1"
    assert c.daemon.lease_ttl == 10
    local = parse_config({"cluster": {"name": "p", "state_dir": "/s"},
                          "members": [{"name": "a", "address": "10.0.0.1"}]}, CONFIG)
    assert local.election is False
    off = parse_config(ssh_config(daemon={"election": False, "id": "cp2",
                                          "bootstrapper": "cp3"}), CONFIG)
    assert off.election is False and off.bootstrapper == "cp3" and off.daemon.id == "cp2"


@pytest.mark.parametrize(("data", "key", "why"), [
    (ssh_config(ssh={"known_hosts": "k"}), "ssh.identity_file", "required"),
    (ssh_config(ssh={"identity_file": "i"}), "ssh.known_hosts", "required"),
    (ssh_config(ssh={"identity_file": "i", "known_hosts": "k", "data_root": "rel/dir"}),
     "ssh.data_root", "absolute"),
    (ssh_config(ssh={"identity_file": "i", "known_hosts": "k", "data_root": "/a b"}),
     "ssh.data_root", "only letters"),
    (ssh_config(ssh={"identity_file": "i", "known_hosts": "k", "member_service": "runit"}),
     "ssh.member_service", "not one of"),
    (ssh_config(ssh={"identity_file": "i", "known_hosts": "k", "port": 0}), "ssh.port",
     "between 1 and 65535"),
    (ssh_config(ssh={"identity_file": "i", "known_hosts": "k", "userr": "x"}), "ssh.userr",
     "unknown key"),
    (ssh_config(members=[{"name": "a", "address": "10.0.0.1", "runtime": "docker"}]),
     "members[0].runtime", "not one of"),
    (ssh_config(members=[{"name": "a", "address": "10.0.0.1", "ssh_host": "a;b"}]),
     "members[0].ssh_host", "not a host name"),
    (ssh_config(members=[{"name": "a", "address": "10.0.0.1", "etcd_binary": "bin/etcd"}]),
     "members[0].etcd_binary", "absolute path"),
    (ssh_config(members=[{"name": "a", "address": "10.0.0.1", "etcd_binary": "/e;rm"}]),
     "members[0].etcd_binary", "letters, digits"),
    (ssh_config(members=[{"name": "a", "address": "10.0.0.1", "etcd_binary": 3}]),
     "members[0].etcd_binary", "string"),
    (ssh_config(members=[{"name": "a", "address": "10.0.0.1", "runtime": "local",
                          "etcd_binary": "/opt/etcd"}]),
     "members[0].etcd_binary", "only for members with runtime = \"ssh\""),
    (ssh_config(cluster={"name": "p", "state_dir": "/s", "runtime": "k8s"}),
     "cluster.runtime", "not one of"),
    (ssh_config(daemon={"id": "a b"}), "daemon.id", "not a valid name"),
    (ssh_config(daemon={"lease_ttl": 1}), "daemon.lease_ttl", "between 2 and 3600"),
    (ssh_config(daemon={"lease_ttl": 2.5}), "daemon.lease_ttl", "integer"),
    (ssh_config(daemon={"election": "yes"}), "daemon.election", "true or false"),
])
def test_bad_ssh_settings_name_their_key(data: dict[str, Any], key: str, why: str) -> None:
    found = problems(data)
    assert any(k == key and why in m for k, m in found), found


def _spec() -> MemberSpec:
    return MemberSpec(name="cp1", client_url="https://10.0.0.1:2379",
                      peer_url="https://10.0.0.1:2380", cluster_token="p",
                      initial_cluster=(("cp1", "https://10.0.0.1:2380"),), initial_state="new")


def test_member_env_file_gives_etcd_exactly_its_flags() -> None:
    c = parse_config(ssh_config(ssh={"identity_file": "i", "known_hosts": "k",
                                     "member_service": "systemd"}), CONFIG)
    rt = SSHRuntime(c.ssh, c.etcd, {"cp1": "10.0.0.1"})
    env = dict(line.split("=", 1) for line in rt.env_content(_spec()).decode().splitlines()
               if not line.startswith("#"))
    want = rt.command_line(_spec())
    assert env["CKEETCD_ETCD_BINARY"] == want[0] == "/usr/local/bin/etcd"
    # what the unit's `sh -c 'exec "$CKEETCD_ETCD_BINARY" $CKEETCD_ETCD_FLAGS'` runs
    assert shlex.split(env["CKEETCD_ETCD_FLAGS"]) == want[1:]
    assert "--data-dir=/var/lib/ckeetcd-member/cp1/data" in want
    assert "--peer-client-cert-auth=true" in want
    unit = (REPO / "systemd" / "ckeetcd-member@.service").read_text()
    assert "EnvironmentFile=/etc/ckeetcd/member-%i.env" in unit
    assert rt.env_file("cp1") == "/etc/ckeetcd/member-cp1.env"


def test_member_env_file_refuses_arguments_it_cannot_carry() -> None:
    c = parse_config(ssh_config(etcd={"extra_args": ["--log-level=debug info"]}), CONFIG)
    rt = SSHRuntime(c.ssh, c.etcd, {"cp1": "10.0.0.1"})
    with pytest.raises(ValueError, match="EnvironmentFile"):
        rt.env_content(_spec())


def test_a_member_may_name_its_own_etcd_binary() -> None:
    """[[members]] etcd_binary: that node's etcd; the others keep [ssh] etcd_binary."""
    from ckeetcd.nodes.router import RoutedRuntime

    members = [{"name": "cp1", "address": "10.0.0.1", "etcd_binary": "/opt/etcd-3.5.30/etcd"},
               {"name": "cp2", "address": "10.0.0.2"}]
    c = parse_config(ssh_config(members=members), CONFIG)
    assert [m.etcd_binary for m in c.members] == ["/opt/etcd-3.5.30/etcd", ""]
    rt = RoutedRuntime(c).ssh
    assert rt.command_line(_spec())[0] == "/opt/etcd-3.5.30/etcd"
    assert rt.binary("cp2") == "/usr/local/bin/etcd"

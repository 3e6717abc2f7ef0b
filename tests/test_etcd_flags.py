"""`[etcd]` values etcd itself refuses: caught by check-config, `run` and a reload.

Issue 11, item 3: `election_timeout_ms = 99999999999` or `extra_args =
["--no-such-flag"]` made members crash-loop. What can be known statically is
checked by the loader (ckeetcd.core.config); which flags and values the local etcd
binary accepts is asked of that binary (ckeetcd.nodes.etcdprobe), which never
gets past flag parsing. No cluster is started here.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ckeetcd.core.config import (
    ETCD_FLAGS_REFUSED,
    ETCD_FLAGS_SET_BY_CKEETCD,
    ConfigError,
    load_config,
    parse_config,
)
from ckeetcd.loop.daemon import Daemon
from ckeetcd.nodes import MemberSpec, etcdprobe, member_flags
from ckeetcd.nodes.local import resolve_etcd_binary
from tests.inproc import run_cli

CONFIG = Path("/srv/ckeetcd/ckeetcd.toml")
ETCD = resolve_etcd_binary("")


def base(etcd: dict[str, Any] | None = None, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "cluster": {"name": "p", "state_dir": "/s"},
        "members": [{"name": "n1", "address": "10.0.0.1"}],
        "etcd": etcd or {},
    }
    data.update(over)
    return data


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as e:
        parse_config(data, CONFIG)
    return [(p.key, p.message) for p in e.value.problems]


# ---- static: the loader ---------------------------------------------------------------
STATIC: list[tuple[str, list[str], dict[str, Any], str, str]] = [
    ("not a flag", ["foo"], {}, "etcd.extra_args[0]", "is not --flag or --flag=value"),
    ("single dash", ["-log-level=debug"], {}, "etcd.extra_args[0]", "is not --flag"),
    ("flag and value as one item with a space", ["--log-level debug"], {},
     "etcd.extra_args[0]", "is not --flag"),
    ("value as its own item", ["--log-level", "debug"], {}, "etcd.extra_args[1]",
     "is not --flag"),
    ("empty item", [""], {}, "etcd.extra_args[0]", "is not --flag"),
    ("bare dashes", ["--"], {}, "etcd.extra_args[0]", "is not --flag"),
    ("a flag ckeetcd sets", ["--ok=1", "--data-dir=/tmp/x"], {}, "etcd.extra_args[1]",
     "--data-dir is set by ckeetcd itself"),
    ("the election timeout by a flag", ["--election-timeout=99999999999"], {},
     "etcd.extra_args[0]", "from etcd.election_timeout_ms: set that key"),
    ("client certificates switched off", ["--client-cert-auth=false"], {},
     "etcd.extra_args[0]", "set by ckeetcd itself (always true)"),
    ("help", ["--help"], {}, "etcd.extra_args[0]", "print its usage and exit"),
    ("-h as Go reads --h", ["--h"], {}, "etcd.extra_args[0]", "print its usage"),
    ("version", ["--version"], {}, "etcd.extra_args[0]", "print its version"),
    ("config file", ["--config-file=/etc/etcd.yaml"], {}, "etcd.extra_args[0]",
     "ignore every other flag"),
    ("force new cluster", ["--force-new-cluster"], {}, "etcd.extra_args[0]",
     "reset the membership"),
    ("discovery", ["--discovery=https://d.example/x"], {}, "etcd.extra_args[0]",
     "conflicts with --initial-cluster"),
    ("twice", ["--log-level=info", "--log-level=debug"], {}, "etcd.extra_args[1]",
     "given twice (also etcd.extra_args[0])"),
    ("quota twice", ["--quota-backend-bytes=17000000"], {"quota_backend_bytes": 17000000},
     "etcd.extra_args[0]", "conflicts with etcd.quota_backend_bytes"),
    ("quota out of range", ["--quota-backend-bytes=99999999999999"], {},
     "etcd.extra_args[0]", "must be between 16777216 and 8589934592"),
    ("quota not a number", ["--quota-backend-bytes=1e9"], {}, "etcd.extra_args[0]",
     "must be between"),
]


@pytest.mark.parametrize(("args", "etcd", "key", "message"), [c[1:] for c in STATIC],
                         ids=[c[0] for c in STATIC])
def test_extra_args_refused_statically(args: list[str], etcd: dict[str, Any], key: str,
                                       message: str) -> None:
    found = problems(base({**etcd, "extra_args": args}))
    assert any(k == key and message in m for k, m in found), found


def test_extra_args_through_a_systemd_environment_file() -> None:
    """SSH members run as units get their flags through an EnvironmentFile (no spaces,
    quotes, '$'); the loader says so instead of the start failing on the node."""
    data = base({"extra_args": ["--log-outputs-x=a b", "--x=$HOME", "--fine=1"]},
                cluster={"name": "p", "state_dir": "/s", "runtime": "ssh"},
                ssh={"identity_file": "i", "known_hosts": "k", "member_service": "systemd"})
    found = problems(data)
    assert [k for k, m in found if "EnvironmentFile" in m] == \
        ["etcd.extra_args[0]", "etcd.extra_args[1]"], found
    data["ssh"]["member_service"] = "process"
    parse_config(data, CONFIG)


def test_accepted_extra_args() -> None:
    args = ["--auto-compaction-mode=periodic", "--auto-compaction-retention=1h",
            "--experimental-initial-corrupt-check", "--quota-backend-bytes=4294967296",
            "--listen-metrics-urls=http://127.0.0.1:2381", "--log-level="]
    assert parse_config(base({"extra_args": args}), CONFIG).etcd.extra_args == tuple(args)


def test_the_flags_ckeetcd_sets_are_the_ones_it_refuses() -> None:
    """Every flag of a member's command line (other than the quota, which has its own
    rule) is in ETCD_FLAGS_SET_BY_CKEETCD, so a new one cannot be forgotten."""
    c = parse_config(base({"quota_backend_bytes": 1 << 30}), CONFIG)
    spec = MemberSpec(name="n1", client_url="https://10.0.0.1:2379",
                      peer_url="https://10.0.0.1:2380", cluster_token="p",
                      initial_cluster=(("n1", "https://10.0.0.1:2380"),), initial_state="new",
                      peer_allowed_cn="ckeetcd:peer")
    names = {f[2:].split("=")[0] for f in member_flags(spec, Path("/d"), Path("/t"), c.etcd)}
    assert names - {"quota-backend-bytes"} == set(ETCD_FLAGS_SET_BY_CKEETCD)
    assert not set(ETCD_FLAGS_SET_BY_CKEETCD) & set(ETCD_FLAGS_REFUSED)


# ---- asking the binary: pure reading of etcd's answers -------------------------------------
USAGE = "Usage:\n\n  etcd [flags]\n    Start an etcd server.\n"
ANSWERS: list[tuple[str, str | None, str | None]] = [
    ("flag provided but not defined: -ckeetcd-probe-1\n" + USAGE, None, None),
    ("flag provided but not defined: -ckeetcd-probe-1\n" + USAGE, "--log-level=x", None),
    ("flag provided but not defined: -ckeetcd-probe-2\n" + USAGE, "--log-level",
     "--log-level needs a value: write --log-level=VALUE"),
    ("flag provided but not defined: -no-such-flag\n" + USAGE, "--no-such-flag",
     "etcd does not know --no-such-flag"),
    ('invalid boolean value "maybe" for -pre-vote: parse error\n' + USAGE, "--pre-vote=maybe",
     'etcd refuses it: invalid boolean value "maybe" for -pre-vote'),
    ("", "--x", "etcd refuses it: no answer"),
    ("flag provided but not defined: -ckeetcd-probe-1\nUsage of sleep:\n", None,
     "answers like a Go program but not like etcd"),
    ("/usr/bin/yes: unrecognized option '--ckeetcd-probe-1'\n", None,
     "does not answer like etcd"),
    ("\x1b[2J" + "y" * 10000, None, "does not answer like etcd"),
]


@pytest.mark.parametrize(("output", "arg", "why"), ANSWERS)
def test_interpret(output: str, arg: str | None, why: str | None) -> None:
    got = etcdprobe.interpret(output, arg)
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got, got
        assert "\x1b" not in got and len(got) < 400


# ---- asking the binary: the real etcd -------------------------------------------------------
def local(tmp_path: Path, extra: list[str], binary: str = "") -> Any:
    data = base({"extra_args": extra, "binary": binary},
                cluster={"name": "p", "state_dir": str(tmp_path / "state")})
    return parse_config(data, tmp_path / "c.toml")


@pytest.mark.parametrize(("arg", "why"), [
    ("--no-such-flag", "etcd does not know --no-such-flag"),
    ("--log-level", "--log-level needs a value"),
    ("--snapshot-count=abc", 'invalid value "abc" for flag -snapshot-count'),
    ("--pre-vote=maybe", 'invalid boolean value "maybe"'),
    ("--auto-compaction-retention=1h", None),
    ("--pre-vote", None),  # a boolean: no value needed
    ("--experimental-initial-corrupt-check=true", None),
])
def test_the_local_etcd_is_asked(tmp_path: Path, arg: str, why: str | None) -> None:
    found = etcdprobe.problems(local(tmp_path, ["--max-txn-ops=256", arg]))
    if why is None:
        assert found == []
    else:
        assert [(p.key, why in p.message) for p in found] == [("etcd.extra_args[1]", True)], \
            found
    assert list(tmp_path.iterdir()) == [], "the probe wrote something"


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(stat.S_IRWXU)
    return str(path)


def test_a_binary_that_is_not_etcd(tmp_path: Path) -> None:
    for binary, why in [(tmp_path / "missing", "No such file"),
                        (Path("/etc/hostname"), "cannot be run"),
                        (Path(_script(tmp_path / "fake", "echo hello\n")), "hello")]:
        found = etcdprobe.problems(local(tmp_path, [], str(binary)))
        assert [p.key for p in found] == ["etcd.binary"], found
        assert why in found[0].message and str(binary) in found[0].message, found


def test_a_binary_that_never_stops_talking_or_never_answers(tmp_path: Path,
                                                            monkeypatch: Any) -> None:
    monkeypatch.setattr(etcdprobe, "TIMEOUT", 0.5)
    chatty = _script(tmp_path / "chatty", "exec yes\n")
    silent = _script(tmp_path / "silent", "exec sleep 600\n")
    for binary in (chatty, silent):
        found = etcdprobe.problems(local(tmp_path, [], binary))
        assert [p.key for p in found] == ["etcd.binary"], found
        assert len(found[0].message) < 500


def test_answers_are_cached_per_binary_version(tmp_path: Path) -> None:
    """A reload re-runs nothing; a replaced binary is asked again."""
    calls = tmp_path / "calls"
    body = (f'echo "$@" >> {calls}\n'
            'echo "flag provided but not defined: -ckeetcd-probe-1"; echo "  etcd [flags]"\n')
    fake = _script(tmp_path / "etcd", body)
    config = local(tmp_path, ["--a=1", "--b=2"], fake)
    assert etcdprobe.problems(config) == []
    assert len(calls.read_text().splitlines()) == 3
    assert etcdprobe.problems(config) == []
    assert len(calls.read_text().splitlines()) == 3
    _script(tmp_path / "etcd", body + "# changed\n")
    os.utime(fake, ns=(1, 1))
    assert etcdprobe.problems(config) == []
    assert len(calls.read_text().splitlines()) == 6


def test_ssh_members_are_not_probed_here(tmp_path: Path) -> None:
    data = base({"extra_args": ["--no-such-flag"], "binary": "/nonexistent"},
                cluster={"name": "p", "state_dir": "/s", "runtime": "ssh"},
                ssh={"identity_file": "i", "known_hosts": "k"})
    assert etcdprobe.problems(parse_config(data, CONFIG)) == []


# ---- the commands ------------------------------------------------------------------------
TOML = """\
[cluster]
name = "flags"
state_dir = "state"

[etcd]
{etcd}

[[members]]
name = "m1"
address = "127.0.0.11"
"""


def ckeetcd(*args: str) -> subprocess.CompletedProcess[str]:
    """`ckeetcd ARGS` without $CKEETCD_CONFIG, in-process (tests/inproc.py)."""
    env = {k: v for k, v in os.environ.items() if k != "CKEETCD_CONFIG"}
    return run_cli("ckeetcd", *args, env=env)


@pytest.mark.parametrize(("etcd", "key"), [
    ('extra_args = ["--no-such-flag"]', "etcd.extra_args[0]"),
    ('extra_args = ["--ok-1=x"]', "etcd.extra_args[0]"),
    ('extra_args = ["--max-txn-ops=256", "--log-level"]', "etcd.extra_args[1]"),
    ("election_timeout_ms = 99999999999", "etcd.election_timeout_ms"),
    ("heartbeat_interval_ms = 5000\nelection_timeout_ms = 20000", "etcd.election_timeout_ms"),
    ('binary = "/bin/true"', "etcd.binary"),
])
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_commands_refuse_what_etcd_refuses(tmp_path: Path, command: str, etcd: str,
                                           key: str) -> None:
    path = tmp_path / "ckeetcd.toml"
    path.write_text(TOML.format(etcd=etcd))
    r = ckeetcd(command, "--config", str(path), "--log-format", "json")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"{path}: {key}: " in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckeetcd.toml"], "something written"


def test_check_config_accepts_flags_etcd_knows(tmp_path: Path) -> None:
    path = tmp_path / "ckeetcd.toml"
    path.write_text(TOML.format(etcd='extra_args = ["--auto-compaction-retention=1h", '
                                     '"--pre-vote"]'))
    r = ckeetcd("check-config", "--config", str(path))
    assert r.returncode == 0, r.stderr


def test_a_reload_with_flags_etcd_refuses_is_rejected(tmp_path: Path) -> None:
    """The running daemon keeps the last good config, and logs why."""
    path = tmp_path / "ckeetcd.toml"
    path.write_text(TOML.format(etcd=""))
    daemon = Daemon(load_config(path))
    path.write_text(TOML.format(etcd='extra_args = ["--no-such-flag"]'))
    daemon.request_reload()
    with capture_logs() as logs:
        assert daemon._maybe_reload() is False
    [event] = [e for e in logs if e["event"] == "config_rejected"]
    assert any("etcd.extra_args[0]" in p and "--no-such-flag" in p for p in event["problems"])
    assert daemon.config.etcd.extra_args == ()

"""Property tests of the config loader: any input ends in a Config or a ConfigError.

Issue 11, "What must be shown": hypothesis over TOML documents. Documents are
generated from the real schema (every table and key the validator knows, with
good, odd and wrong values: NaN, huge and negative numbers, control
characters, long strings, wrong types, unknown keys), written as TOML text and
read by `load_config`; plus raw text, random bytes and mutations of the shipped
example. Every problem must name the file and a key, on one short line; any
other exception fails the test. A Config that loads must hold no NaN, no
control character, and only values inside the ranges the errors name.

Deterministic (derandomize, no example database) and quick: no etcd.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckeetcd.core.config import Config, ConfigError, load_config
from ckeetcd.core.textcheck import refused_char
from tests.hypothesis_tiers import examples

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = (REPO / "config" / "example.toml").read_text()
FUZZ = settings(max_examples=examples(300), derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# ---- values --------------------------------------------------------------------------
TEXT = st.characters(blacklist_categories=("Cs",))  # TOML cannot carry surrogates
ODD_TEXT = st.one_of(
    st.text(TEXT, max_size=20),
    st.sampled_from(["", " ", "root\n", "n1\n", "a\0b", "\x1b[31m", "\u202e", "\u2028",
                     "-x", "..", "/", "~", "a" * 64, "a" * 5000, "\uff11", "é", "fe80::1%eth0",
                     "255.255.255.255", "169.254.1.1", "::ffff:1.2.3.4", "0.0.0.0", "::",
                     "1e999h", "-1h", "0", "87601h", "9999999999h", "nan", "inf", "24h\n"]),
)
ODD_NUMBER = st.one_of(
    st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2, 3600, 3601, 65535, 65536, 50000, 50001, 999999999999,
                     0.0, 0.05, 0.049, 1.0, 0.999, 1 << 63, 1 << 200]),
)
SCALAR = st.one_of(ODD_TEXT, ODD_NUMBER, st.booleans(),
                   st.datetimes(timezones=st.just(dt.timezone.utc)), st.dates())
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(TEXT, max_size=5), inner,
                                                 max_size=3)),
    max_leaves=6)

GOOD: dict[str, dict[str, Any]] = {
    "cluster": {"name": "prod", "state_dir": "/var/lib/ckeetcd", "client_port": 2379,
                "peer_port": 2380, "runtime": "local"},
    "etcd": {"binary": "", "heartbeat_interval_ms": 100, "election_timeout_ms": 1000,
             "quota_backend_bytes": 0, "extra_args": ["--auto-compaction-retention=1h"]},
    "daemon": {"interval": 10.0, "probe_interval": 3.0, "rpc_timeout": 2.0,
               "start_timeout": 60.0, "learner_timeout": 60.0, "id": "cp1", "election": False,
               "lease_ttl": 10, "bootstrapper": "cp1", "paused": False},
    "apiserver": {"etcd_servers_file": "/run/servers", "reload_command": ["true"]},
    "rbac": {"prune_users": False},
    "kubernetes": {"kubeconfig": "/etc/k", "namespace": "kube-system", "name": "cke-etcd",
                   "cluster_domain": "cluster.local"},
    "backup": {"dir": "/b", "interval": 0, "max_backups": 10, "pre_change_keep": 5},
    "tls": {"member_cert_lifetime": "8760h", "member_cert_renew_before": "720h",
            "daemon_cert_lifetime": "2160h"},
    "ssh": {"user": "root", "port": 22, "identity_file": "/i", "known_hosts": "/k",
            "connect_timeout": 5.0, "command_timeout": 30.0, "etcd_binary": "/usr/bin/etcd",
            "data_root": "/var/lib/m", "member_service": "process"},
    "metrics": {"address": "127.0.0.1:9379", "allow_remote": False},
    "maintenance": {"defrag_threshold": 0.5, "min_db_size": 1},
}
MEMBER = {"name": "cp1", "address": "10.0.0.1", "runtime": "local", "ssh_host": "cp1.x"}
USER = {"name": "app", "prefix": "/app/"}


@st.composite
def entry(draw: Any, good: dict[str, Any], odd_percent: int) -> dict[str, Any]:
    """A table of the schema: each key good, odd (odd_percent of the time) or left out;
    now and then an unknown key."""
    out: dict[str, Any] = {}
    for key, value in good.items():
        roll = draw(st.integers(0, 99))
        if roll < odd_percent:
            out[key] = draw(st.one_of(
                ODD_TEXT, ODD_NUMBER, VALUE,
                st.lists(ODD_TEXT, max_size=3) if isinstance(value, list) else VALUE))
        elif roll < odd_percent + odd_percent // 4:
            continue  # missing: the default, or a "missing" problem
        else:
            out[key] = value
    if draw(st.integers(0, 99)) < odd_percent // 2:
        out[draw(st.text(TEXT, min_size=1, max_size=8))] = draw(VALUE)
    return out


@st.composite
def document(draw: Any) -> dict[str, Any]:
    odd = draw(st.sampled_from([0, 2, 5, 20, 50]))
    doc: dict[str, Any] = {}
    for table, good in GOOD.items():
        if draw(st.integers(0, 5)) > 0 or table == "cluster":
            doc[table] = draw(entry(good, odd))
    n = draw(st.integers(0 if odd else 1, 4))
    doc["members"] = [draw(entry({**MEMBER, "name": f"cp{i}", "address": f"10.0.0.{i + 1}"},
                                 odd)) for i in range(n)]
    if draw(st.booleans()):
        doc["users"] = [draw(entry({"name": f"app{i}", "prefix": f"/app{i}/"}, odd))
                        for i in range(draw(st.integers(0, 3)))]
    if draw(st.integers(0, 99)) < odd // 5:
        doc[draw(st.sampled_from(["members", "users", "cluster", "zz"]))] = draw(VALUE)
    return doc


# ---- a small TOML writer (the test must not trust the code under test to write it) --------
def _string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, but astral characters go raw
    (JSON would write surrogate pairs) and DEL must be escaped."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _key(k: str) -> str:
    return _string(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if abs(v) < 10**4000 else hex(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def to_toml(doc: dict[str, Any]) -> str:
    plain = [f"{_key(k)} = {_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict) and not _tables(v)]
    out = plain[:]
    for k, v in doc.items():
        if isinstance(v, dict):
            out.append(f"[{_key(k)}]")
            out.extend(f"{_key(kk)} = {_value(vv)}" for kk, vv in v.items())
        elif _tables(v):
            for item in v:
                out.append(f"[[{_key(k)}]]")
                out.extend(f"{_key(kk)} = {_value(vv)}" for kk, vv in item.items())
    return "\n".join(out) + "\n"


def _tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


# ---- the oracle ------------------------------------------------------------------------------
_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"(?: \(\d+ characters\))?)(?:\[\d+\])?'
KEY = re.compile(rf"{_PART}(?:\.{_PART})*")  # cluster.name, members[2]."a b", ...


def outcome(path: Path) -> Config | None:
    """load_config(path): a Config, or None after checking every problem of its ConfigError."""
    try:
        return load_config(path)
    except ConfigError as e:
        assert e.problems, "a ConfigError without problems"
        for p in e.problems:
            line = str(p)
            assert p.file == str(path), p
            assert p.key and p.message, p
            assert line.isprintable(), repr(line[:300])  # one line: no newline, no escape
            assert len(line) < len(str(path)) + 700, line[:1000]
            if p.key == "-":  # the whole file: unreadable, not UTF-8, not TOML
                assert p.message.startswith(("TOML", "not UTF-8", "cannot read")), p
            else:
                assert KEY.fullmatch(p.key), p
        return None


def check_loaded(config: Config) -> None:
    """What a Config that loads must never hold."""
    def walk(value: Any, where: str) -> None:
        if isinstance(value, float):
            assert math.isfinite(value), where
        elif isinstance(value, str):
            assert refused_char(value) is None, (where, value)
        elif isinstance(value, Path):
            assert refused_char(str(value)) is None, (where, value)
        elif isinstance(value, tuple):
            for i, x in enumerate(value):
                walk(x, f"{where}[{i}]")
        elif dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name), f"{where}.{f.name}")

    walk(config, "config")
    d = config.daemon
    assert 2 <= d.lease_ttl <= 3600 and 0.05 <= d.rpc_timeout <= 300
    assert 0.1 <= d.interval <= 3600 and 0.05 <= d.probe_interval <= 300
    assert 10 <= config.etcd.heartbeat_interval_ms <= 10000
    assert 5 * config.etcd.heartbeat_interval_ms <= config.etcd.election_timeout_ms <= 50000
    assert config.backup.interval == 0 or 1 <= config.backup.interval <= 31 * 86400
    assert 0 <= config.maintenance.defrag_threshold < 1
    assert 1 <= config.ssh.port <= 65535
    assert config.tls.member_cert_lifetime <= dt.timedelta(days=3650)
    for m in config.members:
        assert m.address and "%" not in m.address


@FUZZ
@given(doc=document())
def test_generated_documents(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    config = outcome(path)
    if config is not None:
        check_loaded(config)


def test_the_generator_also_makes_valid_configs(tmp_path: Path) -> None:
    """Not only errors: the all-good document loads (so the oracle sees both outcomes)."""
    doc: dict[str, Any] = {t: dict(v) for t, v in GOOD.items()}
    doc["members"] = [dict(MEMBER)]
    doc["users"] = [dict(USER)]
    path = tmp_path / "good.toml"
    path.write_text(to_toml(doc))
    config = outcome(path)
    assert config is not None
    check_loaded(config)


@FUZZ
@given(text=st.text(max_size=300))
def test_raw_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "raw.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    config = outcome(path)
    if config is not None:
        check_loaded(config)


@FUZZ
@given(data=st.binary(max_size=300))
def test_raw_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "raw.toml"
    path.write_bytes(data)
    outcome(path)


@FUZZ
@given(cuts=st.lists(st.tuples(st.integers(0, len(EXAMPLE)), st.integers(0, 40),
                               st.text(max_size=12)), min_size=1, max_size=4))
def test_mutations_of_the_example(tmp_path: Path, cuts: list[tuple[int, int, str]]) -> None:
    """The shipped example with slices replaced by random text: near-valid files."""
    text = "\n".join(line[1:] if line.startswith("#") and not line.startswith("# ") else line
                     for line in EXAMPLE.splitlines())  # every optional setting on, then damaged
    for at, length, insert in cuts:
        text = text[:at] + insert + text[at + length:]
    path = tmp_path / "mutated.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    config = outcome(path)
    if config is not None:
        check_loaded(config)

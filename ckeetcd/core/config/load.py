"""Config file -> Config: read, parse TOML, validate; every problem names file and key."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ckeetcd.core.config.reader import dot, key_part
from ckeetcd.core.config.schema import CONFIG_ENV, DEFAULT_CONFIG_PATH, Config, ConfigError, Problem
from ckeetcd.core.config.sections import Validator
from ckeetcd.core.textcheck import quote, show


def default_config_path(explicit: str | None, env: Mapping[str, str]) -> Path:
    """--config, else $CKEETCD_CONFIG, else /etc/ckeetcd/ckeetcd.toml."""
    if explicit:
        return Path(explicit)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return DEFAULT_CONFIG_PATH


def load_config(path: Path) -> Config:
    """Read and validate `path`; raise ConfigError naming every problem."""
    fname = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError([Problem(fname, "-", f"cannot read file: {e.strerror or e}")]) from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError([Problem(fname, "-", f"not UTF-8 text: {e}")]) from e
    except tomllib.TOMLDecodeError as e:
        key = syntax_error_key(raw.decode("utf-8"), str(e))
        raise ConfigError([Problem(fname, key, f"TOML syntax error: {e}")]) from e
    except ValueError as e:  # an integer of more than 4300 digits (int()'s own limit)
        raise ConfigError([Problem(fname, "-", f"TOML value out of range: {show(str(e))}")]) \
            from e
    return parse_config(data, path)


_AT = re.compile(r"\(at line (\d+), column \d+\)|\(at end of document\)")
# A TOML key expression: bare, "basic" or 'literal' parts joined by dots. Matched at
# the start of a line (the rest of the line is the value or the header's end).
_PART = r"""[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*'"""
_EXPR = rf"(?:{_PART})(?:[ \t]*\.[ \t]*(?:{_PART}))*"
_KEY = re.compile(rf"({_EXPR})[ \t]*=")
_HEADER = re.compile(rf"\[(\[?)[ \t]*({_EXPR})")


def _key_expr(expr: str) -> str:
    """`a."b c".d` as this module prints keys: each part bare when it can be, else
    quoted, escaped and shortened (a key of megabytes is not echoed whole)."""
    try:
        node: Any = tomllib.loads(f"{expr} = 0")
    except tomllib.TOMLDecodeError:
        return quote(expr)
    parts = []
    while isinstance(node, dict) and len(node) == 1:
        key, node = next(iter(node.items()))
        parts.append(key_part(key))
    return ".".join(parts)


def syntax_error_key(text: str, message: str) -> str:
    """The dotted key a tomllib syntax error points into (best effort), else "-".

    Tracks table headers (counting `[[array]]` entries) and the last `key =`
    down to the reported line, so an error inside a multi-line value still
    names its key, e.g. `members[1].address` or `etcd.extra_args`.
    """
    m = _AT.search(message)
    if m is None:
        return "-"
    lines = text.splitlines()
    lineno = int(m.group(1)) if m.group(1) else len(lines)
    table, last_key = "", ""
    counts: dict[str, int] = {}
    for i, line in enumerate(lines[:lineno], 1):
        stripped = line.strip()
        header = _HEADER.match(stripped)
        if stripped.startswith("["):
            if header is None:
                return "-"
            name = _key_expr(header.group(2))
            if header.group(1):
                counts[name] = counts.get(name, -1) + 1
                name = f"{name}[{counts[name]}]"
            table, last_key = name, ""
            if i == lineno:
                return table
            continue
        key = _KEY.match(stripped)
        if key:
            last_key = _key_expr(key.group(1))
        elif i == lineno and stripped.startswith("="):
            return table or "-"
    return dot(table, last_key) if last_key else (table or "-")


def parse_config(data: Mapping[str, Any], path: Path) -> Config:
    """Validate parsed TOML; relative paths resolve against the config's folder."""
    v = Validator(str(path), path.parent.resolve() if path.parent else Path.cwd())
    v.known(data, "", {"cluster", "members", "etcd", "daemon", "apiserver", "users",
                       "rbac", "kubernetes", "backup", "tls", "ssh", "metrics",
                       "maintenance"})
    cluster = v.cluster(v.table(data, "cluster", required=True))
    members = v.members(data.get("members"), cluster.runtime if cluster else "local")
    ssh = v.ssh(v.table(data, "ssh"), members)
    over_ssh = any(m.runtime == "ssh" for m in members)
    etcd = v.etcd(v.table(data, "etcd"), env_file=over_ssh and ssh.member_service == "systemd")
    daemon = v.daemon(v.table(data, "daemon"), election=over_ssh)
    apiserver = v.apiserver(v.table(data, "apiserver"))
    users = v.users(data.get("users"))
    rbac = v.table(data, "rbac")
    v.known(rbac, "rbac", {"prune_users"})
    prune = v.boolean(rbac, "rbac", "prune_users", False)
    kubernetes = v.kubernetes(v.table(data, "kubernetes")) if "kubernetes" in data else None
    backup = v.backup(v.table(data, "backup"))
    tls = v.tls(v.table(data, "tls"))
    metrics = v.metrics(v.table(data, "metrics"))
    maintenance = v.maintenance(v.table(data, "maintenance"))
    if v.problems:
        raise ConfigError(v.problems)
    assert cluster is not None
    return Config(
        path=path,
        cluster=cluster,
        members=members,
        etcd=etcd,
        daemon=daemon,
        apiserver=apiserver,
        users=users,
        prune_users=prune,
        kubernetes=kubernetes,
        backup=backup,
        tls=tls,
        ssh=ssh,
        metrics=metrics,
        maintenance=maintenance,
    )

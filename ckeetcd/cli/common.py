"""Config loading shared by commands: a bad config is a usage error (exit 2)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from ckeetcd.cli.errors import UsageError
from ckeetcd.core.config import (
    CONFIG_ENV,
    Config,
    ConfigError,
    Problem,
    default_config_path,
    load_config,
)
from ckeetcd.core.textcheck import refused_char, show


def load(args: argparse.Namespace) -> Config:
    """Load the config or exit 2 printing each problem (file, key, why)."""
    if args.config == "":
        raise UsageError("--config: must not be empty (omit it for $CKEETCD_CONFIG, else "
                         "/etc/ckeetcd/ckeetcd.toml)")
    path = default_config_path(args.config, os.environ)
    if args.config is None and refused_char(str(path)):
        raise UsageError(f"${CONFIG_ENV}: {show(str(path))} {refused_char(str(path))}")
    try:
        return load_config(path)
    except ConfigError as e:
        _exit(e.problems)


def config_mtime(args: argparse.Namespace) -> float | None:
    """The config file's mtime, taken before `load` reads it (None: not to be had)."""
    try:
        return default_config_path(args.config or None, os.environ).stat().st_mtime
    except (OSError, ValueError):
        return None


def load_and_probe(args: argparse.Namespace) -> Config:
    """load(), then ask the local etcd binary about itself and [etcd] extra_args
    (ckeetcd.nodes.etcdprobe): for `check-config` and `run`, before anything starts."""
    from ckeetcd.nodes.etcdprobe import problems

    config = load(args)
    found = problems(config)
    if found:
        _exit(found)
    return config


def _exit(problems: list[Problem]) -> NoReturn:
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    raise SystemExit(2) from None


def claimed(config: Config) -> str:
    """Take the state dir as the daemon would (ckeetcd.support.statedir); the refusal, else ""."""
    from ckeetcd.support.statedir import StateDirError, claim_state_dir

    try:
        taken = claim_state_dir(config.cluster.state_dir, config.cluster.name,
                                adopt=config.cluster.adopt_state_dir)
    except StateDirError as e:
        return f"{config.path}: cluster.state_dir: {config.cluster.state_dir}: {e}"
    for level, event, fields in taken.notes:
        if level != "info":
            print(f"{level}: {event}: " + ", ".join(f"{k}={v}" for k, v in fields.items()),
                  file=sys.stderr)
    return ""

"""Config loading shared by commands: a bad config is a usage error (exit 2)."""

from __future__ import annotations

import argparse
import os
import sys

from ckeetcd.config import Config, ConfigError, default_config_path, load_config


def load(args: argparse.Namespace) -> Config:
    """Load the config or exit 2 printing each problem (file, key, why)."""
    path = default_config_path(args.config, os.environ)
    try:
        return load_config(path)
    except ConfigError as e:
        for p in e.problems:
            print(f"error: {p}", file=sys.stderr)
        raise SystemExit(2) from None


def claimed(config: Config) -> str:
    """Take the state dir as the daemon would (ckeetcd.statedir); the refusal, else ""."""
    from ckeetcd.statedir import StateDirError, claim_state_dir

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

"""`ckeetcd run`: the daemon."""

from __future__ import annotations

import argparse
import asyncio

from ckeetcd.cli.common import config_mtime, load_and_probe
from ckeetcd.loop.daemon import Daemon


def run(args: argparse.Namespace) -> int:
    mtime = config_mtime(args)  # before reading: an edit made while the daemon starts is a change
    config = load_and_probe(args)
    return asyncio.run(Daemon(config, config_mtime=mtime).run())

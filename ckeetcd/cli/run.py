"""`ckeetcd run`: the daemon."""

from __future__ import annotations

import argparse
import asyncio

from ckeetcd.cli.common import load_and_probe
from ckeetcd.loop.daemon import Daemon


def run(args: argparse.Namespace) -> int:
    config = load_and_probe(args)
    return asyncio.run(Daemon(config).run())

"""`ckeetcd run`: the daemon."""

from __future__ import annotations

import argparse
import asyncio

from ckeetcd.cli.common import load
from ckeetcd.daemon import Daemon


def run(args: argparse.Namespace) -> int:
    config = load(args)
    return asyncio.run(Daemon(config).run())

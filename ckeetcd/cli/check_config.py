"""`ckeetcd check-config`: validate, print each problem, exit 2 when any."""

from __future__ import annotations

import argparse

from ckeetcd.cli.common import load_and_probe


def check_config(args: argparse.Namespace) -> int:
    config = load_and_probe(args)
    print(f"{config.path}: ok ({len(config.members)} members: "
          f"{', '.join(m.name for m in config.members)})")
    return 0

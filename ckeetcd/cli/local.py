"""`ckeetcd stop-members`: stop the local runtime's etcd processes (by pidfile)."""

from __future__ import annotations

import argparse
import asyncio

from ckeetcd.cli.common import load
from ckeetcd.nodes import LocalRuntime


def stop_members(args: argparse.Namespace) -> int:
    config = load(args)
    runtime = LocalRuntime(config.cluster.state_dir, config.etcd)
    root = runtime.root
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []

    async def stop_all() -> None:
        for name in names:
            if await runtime.stop(name):
                print(f"stopped {name}")

    asyncio.run(stop_all())
    return 0

"""`ckeetcd stop-members`: stop the local runtime's etcd processes (by pidfile).

A running daemon would restart them a moment later, so the command refuses
(exit 2, nothing stopped) while a daemon holds the state dir's lock, unless
automatic changes are paused (`ckeetcd pause` or `[daemon] paused = true`):
then the daemon keeps its hands off and the members stay down until resumed.
Without a daemon the command holds that lock itself while it works, so a
daemon started meanwhile waits for it instead of racing it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from ckeetcd.cli.common import load
from ckeetcd.cli.errors import USAGE_ERROR
from ckeetcd.nodes import LocalRuntime


def stop_members(args: argparse.Namespace) -> int:
    from ckeetcd.coordination.pause import read_pause
    from ckeetcd.support.statelock import LOCK_FILE, acquire_state_lock, lock_holder

    config = load(args)
    runtime = LocalRuntime(config.cluster.state_dir, config.etcd)
    root = runtime.root
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []
    if not names:
        return 0
    state = config.cluster.state_dir
    lock = acquire_state_lock(state)
    paused = "[daemon] paused = true" if config.daemon.paused else read_pause(state)
    if lock is None and not paused:
        print(f"error: the ckeetcd daemon (pid {lock_holder(state)}) holds {state / LOCK_FILE} "
              "and would restart the members at once: stop the daemon first (e.g. systemctl "
              "stop ckeetcd), or run `ckeetcd pause` so that it keeps its hands off, then run "
              "stop-members again\nnothing was stopped", file=sys.stderr)
        return USAGE_ERROR

    async def stop_all() -> None:
        for name in names:
            if await runtime.stop(name):
                print(f"stopped {name}")

    try:
        asyncio.run(stop_all())
    finally:
        if lock is not None:
            os.close(lock)
    if lock is None:
        print(f"the daemon is paused ({paused}): the members stay stopped until `ckeetcd "
              "resume` (or the config's pause is lifted)")
    return 0

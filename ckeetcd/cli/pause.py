"""`ckeetcd pause [--reason TEXT]` / `ckeetcd resume`: the pause flag in the state dir.

While paused the daemon makes no automatic change (no restart, replacement,
defragmentation, servers-file write, certificate renewal) but keeps
observing, logging (`paused` once, then phase "paused" on every cycle line),
serving metrics (ckeetcd_paused 1) and publishing Kubernetes endpoints. It
picks the flag up at its next probe (within [daemon] probe_interval).
`[daemon] paused = true` in the config pauses as well; `resume` says so.
"""

from __future__ import annotations

import argparse
import sys

from ckeetcd.cli.common import claimed, load
from ckeetcd.cli.errors import USAGE_ERROR
from ckeetcd.coordination.pause import clear_pause, read_pause, write_pause


def pause(args: argparse.Namespace) -> int:
    config = load(args)
    refused = claimed(config)  # the flag goes into the state dir: only into one of ours
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return USAGE_ERROR
    path = write_pause(config.cluster.state_dir, args.reason)
    print(f"paused: automatic changes stop at the daemon's next probe ({path})")
    print(f"  {read_pause(config.cluster.state_dir)}")
    print("undo with: ckeetcd resume")
    return 0


def resume(args: argparse.Namespace) -> int:
    config = load(args)
    if clear_pause(config.cluster.state_dir):
        print("resumed: the pause flag is removed")
    else:
        print("not paused by `ckeetcd pause` (no flag file)")
    if config.daemon.paused:
        print(f"still paused by the config: [daemon] paused = true in {config.path}")
    return 0

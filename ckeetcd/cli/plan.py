"""`ckeetcd plan`: what the daemon would do now; changes nothing."""

from __future__ import annotations

import argparse
import asyncio
import json

from ckeetcd.cli.common import load
from ckeetcd.cli.status import gather
from ckeetcd.core.decide import decide


def plan(args: argparse.Namespace) -> int:
    config = load(args)
    desired, observed = asyncio.run(gather(config))
    decision = decide(desired, observed)
    if args.output == "json":
        print(json.dumps({"phase": decision.phase, "reason": decision.reason,
                          "ops": [{"op": o.kind, "targets": o.targets()} for o in decision.ops]}))
        return 0
    print(f"phase: {decision.phase}" + (f" ({decision.reason})" if decision.reason else ""))
    for i, op in enumerate(decision.ops, 1):
        print(f"{i}. {op.kind} {op.targets()}")
    if not decision.ops:
        print("nothing to do")
    return 0

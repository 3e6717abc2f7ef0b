"""`ckeetcd plan`: what the daemon would do now; changes nothing."""

from __future__ import annotations

import argparse
import asyncio
import json

from ckeetcd.cli.common import load
from ckeetcd.cli.status import gather
from ckeetcd.core.planner import plan as plan_ops


def plan(args: argparse.Namespace) -> int:
    config = load(args)
    desired, observed = asyncio.run(gather(config))
    decision = plan_ops(desired, observed)  # as one daemon would: the cluster's whole plan
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

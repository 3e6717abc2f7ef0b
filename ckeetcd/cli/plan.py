"""`ckeetcd plan`: what the daemon would do now; changes nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from ckeetcd.cli.common import load
from ckeetcd.cli.status import gather
from ckeetcd.core.etcdversions import bad_release_warning, parse_version
from ckeetcd.core.model import Observed
from ckeetcd.core.planner import plan as plan_ops
from ckeetcd.core.rollplan import pending, unknown
from ckeetcd.core.rotationplan import rotation_lines, rotation_view


def versions_view(observed: Observed) -> dict[str, Any]:
    """What the plan rests on as to versions: each member's, the cluster's, warnings
    about known-bad releases, and the auth hold ("" fields are None)."""
    members = dict(observed.member_versions())
    warnings = {n: w for n, v in members.items() if (w := bad_release_warning(parse_version(v)))}
    return {"members": members, "cluster_version": observed.cluster_version or None,
            "warnings": warnings, "auth_hold": observed.auth_hold() or None}


def plan(args: argparse.Namespace) -> int:
    config = load(args)
    desired, observed = asyncio.run(gather(config))
    decision = plan_ops(desired, observed)  # as one daemon would: the cluster's whole plan
    versions = versions_view(observed)
    restarts = {n: list(c) for n, c in pending(desired, observed).items()}
    rotation = rotation_view(desired, observed)
    blind = dict(unknown(desired, observed))
    if args.output == "json":
        print(json.dumps({"phase": decision.phase, "reason": decision.reason,
                          "ops": [{"op": o.kind, "targets": o.targets()} for o in decision.ops],
                          "versions": versions, "restarts": restarts,
                          "restart_unknown": blind or None, "rotation": rotation}))
        return 0
    print(f"phase: {decision.phase}" + (f" ({decision.reason})" if decision.reason else ""))
    for i, op in enumerate(decision.ops, 1):
        print(f"{i}. {op.kind} {op.targets()}")
    if not decision.ops:
        print("nothing to do")
    if versions["members"]:
        cluster = f" (cluster version {versions['cluster_version']})" \
            if versions["cluster_version"] else ""
        print("versions: " + ", ".join(f"{n} {v}" for n, v in versions["members"].items())
              + cluster)
    for name, warning in versions["warnings"].items():
        print(f"warning: {name}: {warning}")
    if versions["auth_hold"]:
        print(f"auth held: {versions['auth_hold']}")
    for name, why in restarts.items():
        print(f"restart {name}: {', '.join(why)}")
    for name, problem in blind.items():
        print(f"restart unknown: {name}: {problem}")
    for line in rotation_lines(rotation):
        print(line)
    return 0

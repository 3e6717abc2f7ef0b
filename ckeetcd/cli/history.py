"""`ckeetcd history [-n N] [--output json]`: the recorded ops and steps, newest last."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from ckeetcd.cli.common import load
from ckeetcd.cli.errors import UsageError
from ckeetcd.support.history import History


def history(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UsageError(f"-n: must be at least 1 (got {args.n})")
    config = load(args)
    try:
        recorded = History(config.cluster.state_dir).read()
    except OSError as e:
        print(f"error: {e.filename}: cannot read: {e.strerror or e}", file=sys.stderr)
        return 1
    records = [r for r in recorded
               if r.get("event") in ("op-end", "step-end")][-args.n:]
    if args.output == "json":
        for r in records:
            print(json.dumps(r))
        return 0
    for r in records:
        print(_line(r))
    if not records:
        print("no ops recorded")
    return 0


def _line(r: dict[str, Any]) -> str:
    when = dt.datetime.fromtimestamp(float(r.get("ts", 0)), dt.timezone.utc)
    what = r.get("op", "?") + (f"/{r['step']}" if r.get("event") == "step-end" else "")
    error = f"  {r['error']}" if r.get("error") else ""
    return (f"{when:%Y-%m-%dT%H:%M:%S.%f}Z  cycle {r.get('cycle', '-'):>5}  {what:<34} "
            f"{r.get('targets', ''):<12} {r.get('outcome', ''):<8} "
            f"{float(r.get('duration', 0)):.3f}s{error}")

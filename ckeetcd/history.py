"""Append-only record of every op and step, one JSON object per line.

Lives in the state dir (`history.jsonl`) and survives restarts, so an
operator (and `ckeetcd history`) can see what the daemon did and when.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

HISTORY_FILE = "history.jsonl"


class History:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / HISTORY_FILE

    def record(self, **fields: Any) -> None:
        line = json.dumps({"ts": time.time(), "pid": os.getpid(), **fields}, default=str)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn last line after a crash
        return out

"""Append-only record of every op and step, one JSON object per line.

Lives in the state dir (`history.jsonl`) and survives restarts, so an
operator (and `ckeetcd history`) can see what the daemon did and when. It
is bounded: once it passes `max_bytes` it becomes `history.jsonl.1`
(replacing the one before), so at most about twice that is kept, and
`read()` reads both, oldest first.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

HISTORY_FILE = "history.jsonl"
ROTATED_SUFFIX = ".1"
DEFAULT_MAX_BYTES = 16 * 1024 * 1024


class History:
    def __init__(self, state_dir: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = state_dir / HISTORY_FILE
        self.rotated = state_dir / (HISTORY_FILE + ROTATED_SUFFIX)
        self.max_bytes = max_bytes

    def record(self, **fields: Any) -> None:
        line = json.dumps({"ts": time.time(), "pid": os.getpid(), **fields}, default=str)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
            full = f.tell() >= self.max_bytes > 0
        if full:
            os.replace(self.path, self.rotated)

    def read(self) -> list[dict[str, Any]]:
        out = []
        for path in (self.rotated, self.path):
            try:
                lines = path.read_text().splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a torn last line after a crash
        return out

"""The pause switch a command flips: a flag file in the state dir.

`ckeetcd pause` writes `STATE_DIR/paused` (who, when, why), `ckeetcd resume`
removes it. The observer reads it on every observation (one stat, a small
read when present) into `Observed.paused`, and decide() makes no change while
it is there: the daemon keeps observing, logging, serving metrics and
publishing endpoints. `[daemon] paused = true` in the config pauses as well.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from pathlib import Path

from ckeetcd.support.files import write_atomic

PAUSE_FILE = "paused"


def flag_path(state_dir: Path) -> Path:
    return state_dir / PAUSE_FILE


def read_pause(state_dir: Path) -> str:
    """Why automatic changes are paused by command ("" = not paused)."""
    path = flag_path(state_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ""
    except OSError as e:
        return f"pause file {path} unreadable ({e.strerror}); treated as paused"
    try:
        info = json.loads(text)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(info["at"])))
        why = f": {info['reason']}" if info.get("reason") else ""
        return f"ckeetcd pause by {info.get('by', '?')} at {when}{why}"
    except (ValueError, KeyError, TypeError):
        return f"pause file {path}"


def write_pause(state_dir: Path, reason: str = "") -> Path:
    path = flag_path(state_dir)
    try:
        by = getpass.getuser()
    except (KeyError, OSError):
        by = str(os.getuid())
    write_atomic(path, json.dumps({"at": time.time(), "by": by, "reason": reason}).encode(),
                 0o600)
    return path


def clear_pause(state_dir: Path) -> bool:
    """Remove the flag; False when there was none."""
    try:
        flag_path(state_dir).unlink()
    except FileNotFoundError:
        return False
    return True

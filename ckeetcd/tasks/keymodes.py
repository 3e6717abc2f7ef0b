"""Private keys that others can read: found, fixed when they are ours, and shown.

Every key ckeetcd writes is 0600 from its first byte, but a `chmod`, a
restore from a backup or a copy with the wrong umask can open one up. The
daemon stats each key at start and on every full observation cycle (one
stat per key): a key with group or other bits set is put back to 0600 when
this process owns it (`key_mode_fixed`, a warning), otherwise reported
(`key_mode_bad`, an error, once per mode). What was found is kept in
`STATE_DIR/key-modes.json` so that `ckeetcd status` shows it, beside what
its own read-only look finds now. Key contents are never read.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ckeetcd.support.files import write_atomic

RECORD_FILE = "key-modes.json"
KEEP = 20  # findings kept in RECORD_FILE (newest last)


@dataclass(frozen=True)
class Finding:
    """A key found readable by others."""

    path: str
    mode: str  # as found, e.g. "0644"
    fixed: bool  # set to 0600 here
    problem: str = ""  # why not fixed
    at: float = 0.0  # when (Unix time)


def key_files(state_dir: Path) -> list[Path]:
    """The private keys of the state dir: the CA's, the daemon's, the local members'."""
    pki = state_dir / "pki"
    found = [*pki.glob("*.key"), *pki.glob("*.key.pending"),
             *(state_dir / "members").glob("*/tls/*.key")]
    return sorted(found)


def scan(paths: list[Path], fix: bool, now: float | None = None) -> list[Finding]:
    """The keys among `paths` open to group or others; with `fix`, those this process owns
    are set to 0600 (never through a symlink)."""
    now = time.time() if now is None else now
    out = []
    uid = os.geteuid()
    for p in paths:
        try:
            st = p.lstat()
            link = stat.S_ISLNK(st.st_mode)
            if link:
                st = p.stat()
        except OSError:
            continue  # gone meanwhile (a renewal renames over it)
        mode = stat.S_IMODE(st.st_mode)
        if not mode & 0o077:
            continue
        shown = f"{mode:04o}"
        if not fix:
            out.append(Finding(str(p), shown, False, "", now))
        elif link:
            out.append(Finding(str(p), shown, False,
                               "a symlink: fix the file it points to (chmod 600)", now))
        elif st.st_uid != uid:
            out.append(Finding(str(p), shown, False,
                               f"owned by uid {st.st_uid}, not by this daemon (uid {uid}): "
                               f"chown it back, then chmod 600", now))
        else:
            try:
                p.chmod(0o600)
                out.append(Finding(str(p), shown, True, "", now))
            except OSError as e:
                out.append(Finding(str(p), shown, False, f"chmod failed: {e.strerror}", now))
    return out


def read_record(state_dir: Path) -> list[Finding]:
    try:
        raw = json.loads((state_dir / RECORD_FILE).read_text())
        return [Finding(**f) for f in raw.get("found", [])]
    except (OSError, ValueError, TypeError, AttributeError):
        return []


def record(state_dir: Path, findings: list[Finding]) -> None:
    """Add findings to RECORD_FILE (the newest KEEP)."""
    kept = (read_record(state_dir) + findings)[-KEEP:]
    write_atomic(state_dir / RECORD_FILE,
                 (json.dumps({"found": [asdict(f) for f in kept]}, indent=1) + "\n").encode(),
                 0o600)


class KeyModeWatch:
    """The daemon's check: fix, log each new finding once, record it."""

    def __init__(self, state_dir: Path, log: Any) -> None:
        self.state_dir = state_dir
        self.log = log
        self._reported: set[tuple[str, str]] = set()  # unfixable (path, mode) logged

    def check(self) -> list[Finding]:
        findings = scan(key_files(self.state_dir), fix=True)
        new = [f for f in findings if f.fixed or (f.path, f.mode) not in self._reported]
        for f in new:
            if f.fixed:
                self.log.warning("key_mode_fixed", path=f.path, old_mode=f.mode, mode="0600",
                                 hint="a private key was readable by others: find out who "
                                      "changed it; consider the key exposed")
            else:
                self._reported.add((f.path, f.mode))
                self.log.error("key_mode_bad", path=f.path, mode=f.mode, reason=f.problem)
        if new:
            try:
                record(self.state_dir, new)
            except OSError as e:
                self.log.warning("key_mode_record_failed", file=str(self.state_dir / RECORD_FILE),
                                 error=e.strerror or str(e))
        return findings


def status_view(state_dir: Path) -> list[dict[str, Any]]:
    """For `ckeetcd status`: what the daemon found (and fixed or not), then keys open to
    others right now that it has not reported (read-only: nothing is changed)."""
    seen = read_record(state_dir)
    now = scan(key_files(state_dir), fix=False)
    bad_now = {f.path for f in now}
    out = [{**asdict(f), "bad_now": f.path in bad_now} for f in seen]
    recorded = {(f.path, f.mode) for f in seen if not f.fixed}
    out += [{**asdict(f), "problem": "open to others now", "bad_now": True}
            for f in now if (f.path, f.mode) not in recorded]
    return out

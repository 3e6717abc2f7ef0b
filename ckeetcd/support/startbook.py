"""The edge of the restart back-off: each member's start streak, exits, and a file.

The rule is pure (ckeetcd.core.restarts); this keeps its state per member, feeds
it the clock and what each observation saw, notices when a process we knew
has gone, and logs that as `member_exited` (status, the last lines of the
member's own log). The state lives in `STATE_DIR/starts.json`, so that a
restarted daemon carries a streak on and `ckeetcd status` and `plan` show
the last exit and the hold. Only the daemon writes it (`readonly` is for
the commands); a broken or missing file is an empty book.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ckeetcd.core import restarts
from ckeetcd.core.model import MemberExit, Runtime
from ckeetcd.core.restarts import Starts
from ckeetcd.support.files import write_atomic
from ckeetcd.support.history import History

STARTS_FILE = "starts.json"


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Member:
    starts: Starts
    pid: int | None = None  # the process we expect to be running
    started_at: float | None = None
    healthy_seen: bool = False  # since the last start
    last_exit: dict[str, Any] | None = None
    disk_free: int | None = None  # as the latest observation saw it


class StartBook:
    def __init__(self, state_dir: Path, log: Any = None, history: History | None = None,
                 readonly: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.path = state_dir / STARTS_FILE
        self.log = log
        self.history = history
        self.readonly = readonly
        self.clock = clock
        self._members: dict[str, _Member] = {}
        self._load()

    # ---- what the start op and the observer tell it ----------------------------
    def started(self, name: str) -> None:
        """A start of `name` is about to be made (counted even if spawning fails)."""
        m = self._get(name)
        now = self.clock()
        m.starts = restarts.started(m.starts, now)
        m.pid, m.started_at, m.healthy_seen = None, now, False
        self._save()

    def forget(self, name: str) -> None:
        """`name` leaves the cluster: its streak and last exit go (a new member may
        take the name)."""
        if self._members.pop(name, None) is not None:
            self._save()

    def spawned(self, name: str, pid: int) -> None:
        self._get(name).pid = pid

    def stopped(self, name: str) -> None:
        """Stopped on purpose: its end is not an exit to report."""
        self._get(name).pid = None

    def seen(self, name: str, running: bool, pid: int | None, healthy: bool,
             disk_free: int | None = None) -> bool:
        """Feed one observation; True when the process we knew is gone (call exited())."""
        m = self._get(name)
        m.disk_free = disk_free
        before = m.starts.count
        m.starts = restarts.seen(m.starts, self.clock(), healthy)
        m.healthy_seen = m.healthy_seen or healthy
        if before and not m.starts.count:
            self._save()  # healthy long enough: a new streak
        if running and pid and m.pid in (None, pid):
            m.pid = pid
            return False
        return m.pid is not None  # gone, or another process in its place

    def exited(self, name: str, info: MemberExit) -> dict[str, Any]:
        """Log and keep how `name`'s process ended; returns the record."""
        m = self._get(name)
        now = self.clock()
        until = restarts.held_until(m.starts, now)
        record: dict[str, Any] = {
            "member": name, "pid": m.pid, "time": iso(now), "status": info.status,
            "code": info.code, "signal": info.signal, "reason": info.reason,
            "log_tail": list(info.log_tail),
            "ran_for": round(now - m.started_at, 3) if m.started_at is not None else None,
            "became_healthy": m.healthy_seen, "starts": m.starts.count,
            "next_start": iso(until), "disk_free": m.disk_free,
        }
        m.pid, m.last_exit = None, record
        self._save()
        if self.log is not None:
            self.log.warning("member_exited", **record)
        if self.history is not None:
            self.history.record(event="member-exited", **record)
        return record

    # ---- what it tells the decision and the commands ------------------------------
    def held_until(self, name: str) -> float | None:
        m = self._members.get(name)
        return restarts.held_until(m.starts, self.clock()) if m else None

    def stamp(self, name: str, r: Runtime) -> Runtime:
        m = self._members.get(name)
        if m is None:
            return r
        self._lift_if_space_is_back(name, m, r)
        return replace(r, held_until=self.held_until(name) or 0.0, starts=m.starts.count,
                       last_exit=(m.last_exit or {}).get("status", ""))

    def _lift_if_space_is_back(self, name: str, m: _Member, r: Runtime) -> None:
        """End a hold whose cause, a full disk, has gone (restarts.space_is_back)."""
        last = m.last_exit or {}
        text = f"{last.get('status', '')} {last.get('reason', '')}"
        held = restarts.held_until(m.starts, self.clock())
        if r.running or held is None or not restarts.space_is_back(
                text, last.get("disk_free"), r.disk_free):
            return
        m.starts = restarts.lifted(m.starts)
        self._save()
        record = {"member": name, "disk_free": r.disk_free, "held_until": iso(held),
                  "last_exit": last.get("status", "")}
        if self.log is not None:
            self.log.info("restart_hold_lifted", reason="disk space is back", **record)
        if self.history is not None:
            self.history.record(event="restart-hold-lifted", **record)

    def last_exit(self, name: str) -> dict[str, Any] | None:
        m = self._members.get(name)
        return m.last_exit if m else None

    # ---- the file -------------------------------------------------------------------
    def _get(self, name: str) -> _Member:
        if name not in self._members:
            self._members[name] = _Member(Starts())
        return self._members[name]

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            for name, v in data["members"].items():
                last = v.get("last")
                self._members[str(name)] = _Member(
                    Starts(count=int(v.get("count", 0)),
                           last=float(last) if last is not None else None),
                    last_exit=v.get("last_exit") if isinstance(v.get("last_exit"), dict)
                    else None)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self._members = {}

    def _save(self) -> None:
        if self.readonly:
            return
        data = {"members": {n: {"count": m.starts.count, "last": m.starts.last,
                                "last_exit": m.last_exit}
                            for n, m in sorted(self._members.items())}}
        try:
            write_atomic(self.path, json.dumps(data, indent=1).encode(), 0o600)
        except OSError as e:
            if self.log is not None:
                self.log.warning("starts_file_unwritable", path=str(self.path), error=str(e))

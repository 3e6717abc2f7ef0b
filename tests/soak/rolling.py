"""The daemon SIGKILLed in the middle of a rolling change, then started again.

A rolling change (ckeetcd.core.rollplan) restarts the members one at a time
on new flags or a new binary, the leader last after leadership moved away.
The fault edits `[etcd]` in the config (heartbeat_interval_ms 100 <-> 150,
or, when the run has a second etcd binary of the same minor, `binary` flips
between them: a patch upgrade or downgrade), kills the daemon right after the
k-th step of the change (k random, plus 0-20 ms) and starts it again. The
fault is not over until every member runs with the new setting (its pidfile's
command line says so) and the cluster is steady: the change must finish after
the restart, without a human.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.soak.nemesis import DaemonLogTail, Fault, FaultError, World

ROLLING_OPS = ("stop-member", "restart-member", "move-leader")
# op_step events of a 3-member change: per member stop (the first with its snapshot) and
# restart (install-tls, start-process, watch-start), and the move-leader steps
ROLL_STEP_EVENTS = 16
HEARTBEATS = (100, 150)  # ms; both at most 1/5 of the 1 s election timeout


def etcd_keys(extra: str) -> dict[str, str]:
    """The raw values of the `[etcd]` keys in a config fragment."""
    out: dict[str, str] = {}
    section = ""
    for line in extra.splitlines():
        s = line.strip()
        if s.startswith("["):
            section = s
        elif section == "[etcd]" and (m := re.match(r"(\w+)\s*=\s*(.+)$", s)):
            out[m.group(1)] = m.group(2)
    return out


def with_etcd_key(extra: str, key: str, raw: str) -> str:
    """`extra` with `[etcd] key = raw` (raw TOML: quote strings), the section added first
    if it is missing."""
    lines = extra.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "[etcd]")
    except StopIteration:
        return f"[etcd]\n{key} = {raw}\n\n{extra}"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("[")),
               len(lines))
    for i in range(start + 1, end):
        if re.match(rf"\s*{key}\s*=", lines[i]):
            lines[i] = f"{key} = {raw}"
            break
    else:
        lines.insert(start + 1, f"{key} = {raw}")
    return "\n".join(lines) + "\n"


@dataclass
class DaemonKilledMidRolling(Fault):
    """A rolling change, and the daemon SIGKILLed right after its k-th step."""

    what: str = ""  # "binary", "heartbeat", or "" (drawn by the seed)
    change: tuple[str, str] = field(default=("", ""), repr=False)  # (key, raw TOML value)

    def __post_init__(self) -> None:
        self.kind = "daemon-killed-mid-rolling"

    def choose(self, w: World) -> tuple[str, str]:
        """The change: the binary (when the run has two) half the time, and always back
        to the run's own first binary when it runs another; else the heartbeat."""
        keys = etcd_keys(w.cluster.extra)
        binaries = [b for b in w.binaries if Path(b).exists()]
        now = json.loads(keys["binary"]) if "binary" in keys else ""
        if self.what == "binary" and len(binaries) < 2:
            raise FaultError(f"a binary change needs two etcd binaries, not {w.binaries}")
        if len(binaries) >= 2 and self.what != "heartbeat" and (
                self.what == "binary" or now != binaries[0] or w.rng.random() < 0.5):
            return "binary", json.dumps(binaries[0] if now != binaries[0] else binaries[1])
        hb = int(keys.get("heartbeat_interval_ms", str(HEARTBEATS[0])))
        return "heartbeat_interval_ms", str(next(h for h in HEARTBEATS if h != hb))

    def begin(self, w: World) -> dict[str, Any]:
        k = w.rng.randint(1, ROLL_STEP_EVENTS - 1)
        extra_delay = round(w.rng.uniform(0.0, 0.02), 4)
        self.change = self.choose(w)
        tail = DaemonLogTail(w.cluster.daemon_log)
        leader = w.leader()
        w.cluster.extra = with_etcd_key(w.cluster.extra, *self.change)
        w.cluster.write_config(w.names)
        steps: list[str] = []
        deadline = time.monotonic() + 90
        while len(steps) < k and self.pending(w) is not None:
            if time.monotonic() > deadline:
                raise FaultError(f"the rolling change {self.change} logged only {steps} in 90 s")
            steps += [f"{e.get('op')}:{e.get('step')}" for e in tail.new()
                      if e.get("event") == "op_step" and e.get("op") in ROLLING_OPS]
            time.sleep(0.005)
        time.sleep(extra_delay)  # a random moment after the k-th step ended
        w.kill_daemon()
        steps += [f"{e.get('op')}:{e.get('step')}" for e in tail.new()
                  if e.get("event") == "op_step" and e.get("op") in ROLLING_OPS]
        w.start_daemon()
        return {"change": "=".join(self.change), "leader": leader, "killed_after_step": k,
                "steps_done": steps}

    def pending(self, w: World) -> str | None:
        """Which members do not run with the new setting yet (None: all do)."""
        key, raw = self.change
        if not key:
            return None
        behind = []
        for n in w.names:
            cmd = w.command(n)
            if cmd is None:
                behind.append(f"{n} (not running)")
            elif key == "binary" and Path(cmd[0]).resolve() != Path(json.loads(raw)).resolve():
                behind.append(f"{n} runs {cmd[0]}")
            elif key == "heartbeat_interval_ms" and f"--heartbeat-interval={raw}" not in cmd:
                behind.append(f"{n} without --heartbeat-interval={raw}")
        return f"rolling change {key}={raw} pending: {', '.join(behind)}" if behind else None

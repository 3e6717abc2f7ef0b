"""Side task: say it once, loudly, when an alarm or the pause switch changes.

- `alarm_raised` (level error, `alert: true` for CORRUPT; warning for NOSPACE)
  and `alarm_cleared`, per (member, alarm), with what the daemon does about it;
- `paused` (warning, with the reason) and `resumed`.

The phase of every cycle line says the same thing continuously ("corrupt",
"nospace", "paused"); these events are the edges, for alerting on logs.
"""

from __future__ import annotations

from typing import Any

from ckeetcd.core.config import Config
from ckeetcd.core.model import Desired, Observed
from ckeetcd.tasks.edges import EdgeTask, say_edge

ACTIONS = {
    "NOSPACE": "compact, defragment every member one at a time (only while all are "
               "healthy), then disarm",
    "CORRUPT": "automatic changes stopped; find the corrupt member (etcdctl endpoint "
               "hashkv), replace it, then disarm by hand",
}


class AlertWatch(EdgeTask):
    name = "alert-watch"

    def __init__(self, log: Any) -> None:
        self.log = log
        self.alarms: set[tuple[int, str]] | None = None
        self.paused: str | None = None

    def offer(self, config: Config, desired: Desired, observed: Observed) -> None:
        if observed.members is not None:  # alarms are known only while someone answers
            names = {m.id: m.name for m in observed.members}
            now = set(observed.alarms)
            before = self.alarms or set()
            for member_id, alarm in sorted(now - before):
                fields = {"alarm": alarm, "member_id": f"{member_id:x}",
                          "member": names.get(member_id, ""),
                          "action": ACTIONS.get(alarm, "none")}
                if alarm == "CORRUPT":
                    self.log.error("alarm_raised", alert=True, **fields)
                else:
                    self.log.warning("alarm_raised", **fields)
            for member_id, alarm in sorted(before - now):
                self.log.info("alarm_cleared", alarm=alarm, member_id=f"{member_id:x}",
                              member=names.get(member_id, ""))
            self.alarms = now
        why = "[daemon] paused = true" if desired.paused else observed.paused
        self.paused = say_edge(self.log, self.paused, why, "paused", "resumed")

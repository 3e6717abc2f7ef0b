"""Side task: make a formed cluster's loss of quorum loud, once, and its return."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ckeetcd.core import quorumalert
from ckeetcd.core.config import Config
from ckeetcd.core.model import Desired, Observed


class QuorumWatch:
    """Side task: log `quorum_lost` when a formed cluster loses quorum, `quorum_restored` after.

    The decision ladder already refuses everything but restarts of stopped
    members that still have data (phase "no-quorum"), so the daemon does not
    thrash; this makes the state loud once, on the transition, with what the
    operator can do about it. `ckeetcd status --output json` shows `"quorum"`.
    The alert waits for evidence beyond one missed probe (core.quorumalert):
    until then `quorum_in_doubt` (warning), then `quorum_lost` or
    `quorum_doubt_cleared`.
    """

    name = "quorum-watch"

    def __init__(self, log: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.clock = clock
        self.watch = quorumalert.Watch()

    def offer(self, config: Config, desired: Desired, observed: Observed) -> None:
        if not observed.formed:
            return  # bootstrapping: no quorum yet is expected
        sight = quorumalert.Sight(
            voters=len(observed.voters()) if observed.members is not None else
            len(desired.members),
            healthy=len(observed.healthy_voters()),
            running=sum(1 for n in self._voter_names(desired, observed)
                        if not (r := observed.runtime(n)).reachable or r.running),
            at=self.clock())
        # one probe deadline (the observer's: min(rpc_timeout, 1 s)) for a slow member
        confirm = min(config.daemon.rpc_timeout, 1.0)
        self.watch, event = quorumalert.step(self.watch, sight, confirm)
        if not event:
            return
        fields: dict[str, Any] = {"healthy_voters": sight.healthy, "voters": sight.voters}
        if event == quorumalert.RESTORED or event == quorumalert.DOUBT_CLEARED:
            self.log.info(event, **fields)
            return
        fields.update(
            reachable=observed.members is not None, running_voters=sight.running,
            stopped_with_data=sorted(n for n, r in observed.runtimes.items()
                                     if r.reachable and not r.running and r.has_data))
        if event == quorumalert.IN_DOUBT:
            self.log.warning(event, confirm_after=confirm,
                             action="looking again: a running member may only be slow",
                             **fields)
            return
        self.log.error(
            event, **fields,
            action="waiting: only stopped members that still have data are restarted",
            hint="if members lost their data: stop the daemon, then "
                 "`ckeetcd restore --from BACKUP`")

    @staticmethod
    def _voter_names(desired: Desired, observed: Observed) -> list[str]:
        """The voters' names (the desired members' without a member list; a voter not
        started yet has no name: its runtime is unknown, so it counts as running)."""
        if observed.members is None:
            return [d.name for d in desired.members]
        return [m.name for m in observed.voters()]

    async def run(self) -> None:
        await asyncio.Event().wait()  # all the work is in offer()

"""Side task: make a formed cluster's loss of quorum loud, once, and its return."""

from __future__ import annotations

import asyncio
from typing import Any

from ckeetcd.core.config import Config
from ckeetcd.core.model import Desired, Observed


class QuorumWatch:
    """Side task: log `quorum_lost` when a formed cluster loses quorum, `quorum_restored` after.

    The decision ladder already refuses everything but restarts of stopped
    members that still have data (phase "no-quorum"), so the daemon does not
    thrash; this makes the state loud once, on the transition, with what the
    operator can do about it. `ckeetcd status --output json` shows `"quorum"`.
    """

    name = "quorum-watch"

    def __init__(self, log: Any) -> None:
        self.log = log
        self.had: bool | None = None

    def offer(self, config: Config, desired: Desired, observed: Observed) -> None:
        if not observed.formed:
            return  # bootstrapping: no quorum yet is expected
        has = observed.has_quorum()
        if has == self.had:
            return
        voters, healthy = len(observed.voters()), len(observed.healthy_voters())
        if not has:
            self.log.error(
                "quorum_lost", healthy_voters=healthy, voters=voters,
                reachable=observed.members is not None,
                stopped_with_data=sorted(n for n, r in observed.runtimes.items()
                                         if r.reachable and not r.running and r.has_data),
                action="waiting: only stopped members that still have data are restarted",
                hint="if members lost their data: stop the daemon, then "
                     "`ckeetcd restore --from BACKUP`")
        elif self.had is False:
            self.log.info("quorum_restored", healthy_voters=healthy, voters=voters)
        self.had = has

    async def run(self) -> None:
        await asyncio.Event().wait()  # all the work is in offer()

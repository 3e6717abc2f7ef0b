"""What the log-edge side tasks share: all their work is in offer(), and a condition
with a reason (paused, auth held) is said when it begins or changes and when it ends."""

from __future__ import annotations

import asyncio
from typing import Any


class EdgeTask:
    """A side task that only watches what each cycle offers: nothing runs in between."""

    async def run(self) -> None:
        await asyncio.Event().wait()  # all the work is in offer()


def say_edge(log: Any, before: str | None, now: str, begun: str, ended: str) -> str:
    """Log `begun` (warning, with the reason) when the condition starts or its reason
    changes and `ended` (info) when it goes, but not at the first look (`before` None)
    when it is off; returns the state to keep."""
    if now != before:
        if now:
            log.warning(begun, reason=now)
        elif before is not None:
            log.info(ended)
    return now

"""LeaderOnly: a task that changes the world runs only while this daemon may act."""

from __future__ import annotations

import asyncio
from typing import Any

from ckeetcd.loop.sidetasks import LeaderOnly
from tests.harness import ListLog


class Recorder:
    """A side task that records what it was offered and runs until cancelled."""

    name = "recorder"

    def __init__(self, born: list[Recorder]) -> None:
        self.offers: list[Any] = []
        self.running = False
        self.cancelled = False
        born.append(self)

    def offer(self, config: Any, desired: Any, observed: Any) -> None:
        self.offers.append(observed)

    async def run(self) -> None:
        self.running = True
        try:
            await asyncio.Event().wait()
        finally:
            self.running = False
            self.cancelled = True


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_runs_a_fresh_instance_per_term_and_never_while_following() -> None:
    async def go() -> tuple[list[Recorder], list[str]]:
        born: list[Recorder] = []
        acting = {"now": False}
        log = ListLog()
        gate = LeaderOnly("recorder", lambda c: Recorder(born), lambda: acting["now"], log)
        runner = asyncio.create_task(gate.run())
        gate.offer("cfg", "want", "follower-view")
        await settle()
        assert born == []  # a follower never starts it

        acting["now"] = True
        gate.offer("cfg", "want", "leader-view-1")
        await settle()
        gate.offer("cfg", "want", "leader-view-2")
        await settle()
        assert len(born) == 1 and born[0].running
        assert born[0].offers == ["leader-view-1", "leader-view-2"]

        acting["now"] = False  # deposed: stopped, and offered nothing more
        gate.offer("cfg", "want", "follower-view-2")
        await settle()
        assert born[0].cancelled and born[0].offers[-1] == "leader-view-2"

        acting["now"] = True  # leads again: a new instance, nothing carried over
        gate.offer("cfg", "want", "leader-view-3")
        await settle()
        assert len(born) == 2 and born[1].running and born[1].offers == ["leader-view-3"]
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        assert born[1].cancelled
        return born, log.names()

    _, events = asyncio.run(go())
    assert events == ["side_task_started", "side_task_stopped", "side_task_started"]


def test_follows_the_config_a_reload_adds_or_removes_the_section() -> None:
    async def go() -> list[str]:
        born: list[Recorder] = []
        log = ListLog()
        gate = LeaderOnly("recorder", lambda c: Recorder(born), lambda: True, log,
                          wanted=lambda config: config == "with-section")
        runner = asyncio.create_task(gate.run())
        gate.offer("without", "want", "view-1")
        await settle()
        assert born == []
        gate.offer("with-section", "want", "view-2")  # the reload added it
        await settle()
        assert len(born) == 1 and born[0].running and born[0].offers == ["view-2"]
        gate.offer("without", "want", "view-3")  # and took it away again
        await settle()
        assert born[0].cancelled
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        return [f"{e['event']}:{e.get('reason', '')}" for e in log.events]

    assert asyncio.run(go()) == ["side_task_started:", "side_task_stopped:not configured"]

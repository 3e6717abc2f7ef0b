"""The one poll loop (ckeetcd.support.polling) on a stepped clock: no real sleeps."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import pytest

from ckeetcd.support.polling import Backoff, Poll, retry


@dataclass
class SteppedClock:
    """Time moves only when the code under test sleeps (or an attempt says it took time)."""

    t: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 9))
        self.t += seconds


async def run(poll: Poll, clock: SteppedClock, *, done_at: int = 0,
              takes: float = 0.0) -> tuple[list[float], bool]:
    """The times attempts started, and whether the loop ended by success (at attempt `done_at`)."""
    starts: list[float] = []
    async for n in poll:
        starts.append(round(clock.t, 9))
        clock.t += takes
        if n == done_at:
            return starts, True
    return starts, False


CASES = [
    # name, budget, backoff, done_at, attempt duration, attempt starts, sleeps, succeeded
    ("success on the first try: no sleep",
     5.0, Backoff(0.5), 1, 0.0, [0.0], [], True),
    ("success on the 4th try",
     5.0, Backoff(0.5), 4, 0.0, [0.0, 0.5, 1.0, 1.5], [0.5, 0.5, 0.5], True),
    ("deadline reached: the last sleep is cut so one attempt comes at the deadline",
     1.0, Backoff(0.3), 0, 0.0, [0.0, 0.3, 0.6, 0.9, 1.0], [0.3, 0.3, 0.3, 0.1], False),
    ("backoff grows by its factor up to its cap",
     5.0, Backoff(0.25, factor=2, cap=1.0), 0, 0.0,
     [0.0, 0.25, 0.75, 1.75, 2.75, 3.75, 4.75, 5.0], [0.25, 0.5, 1.0, 1.0, 1.0, 1.0, 0.25], False),
    ("slow attempts count against the budget; none starts after the deadline",
     1.0, Backoff(0.3), 0, 0.4, [0.0, 0.7], [0.3], False),
    ("success on the deadline's own attempt",
     1.0, Backoff(0.3), 5, 0.0, [0.0, 0.3, 0.6, 0.9, 1.0], [0.3, 0.3, 0.3, 0.1], True),
    ("a zero budget is one attempt",
     0.0, Backoff(1.0), 0, 0.0, [0.0], [], False),
]


@pytest.mark.parametrize(("name", "budget", "backoff", "done_at", "takes", "starts", "sleeps",
                          "ok"), CASES, ids=[c[0] for c in CASES])
async def test_poll(name: str, budget: float, backoff: Backoff, done_at: int, takes: float,
                    starts: list[float], sleeps: list[float], ok: bool) -> None:
    clock = SteppedClock()
    got_starts, got_ok = await run(Poll(budget, backoff, clock), clock, done_at=done_at,
                                   takes=takes)
    assert (got_starts, clock.sleeps, got_ok) == (starts, sleeps, ok), name


async def test_each_loop_over_a_poll_starts_its_own_deadline() -> None:
    clock = SteppedClock(t=100.0)
    poll = Poll(1.0, Backoff(0.5), clock)
    first, _ = await run(poll, clock)
    second, _ = await run(poll, clock)
    assert first == [100.0, 100.5, 101.0]
    assert second == [101.0, 101.5, 102.0]


async def test_an_unbounded_poll_keeps_going_at_the_capped_delay() -> None:
    clock = SteppedClock()
    starts, ok = await run(Poll(math.inf, Backoff(0.5, factor=2, cap=30.0), clock), clock,
                           done_at=12)
    assert ok and len(starts) == 12
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0, 30.0]


async def test_cancellation_stops_the_loop_while_it_sleeps() -> None:
    sleeping = asyncio.Event()

    class BlockedClock(SteppedClock):
        async def sleep(self, seconds: float) -> None:
            self.sleeps.append(seconds)
            sleeping.set()
            await asyncio.Event().wait()  # only cancellation ends this sleep

    clock = BlockedClock()
    attempts: list[int] = []

    async def loop() -> None:
        async for n in Poll(10.0, Backoff(1.0), clock):
            attempts.append(n)

    task = asyncio.create_task(loop())
    await sleeping.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert attempts == [1] and clock.sleeps == [1.0]


class Busy(Exception):
    pass


async def test_retry_returns_once_the_call_succeeds() -> None:
    clock = SteppedClock()
    calls: list[float] = []

    async def call() -> str:
        calls.append(clock.t)
        if len(calls) < 3:
            raise Busy("not yet")
        return "done"

    got = await retry(call, Poll(10.0, Backoff(0.1, factor=2), clock),
                      lambda e: isinstance(e, Busy))
    assert got == "done" and calls == [0.0, 0.1, pytest.approx(0.3)]


async def test_retry_raises_the_last_retried_error_at_the_deadline() -> None:
    clock = SteppedClock()
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise Busy(f"busy #{calls}")

    with pytest.raises(Busy, match="busy #4"):
        await retry(call, Poll(1.0, Backoff(0.4), clock), lambda e: isinstance(e, Busy))
    assert clock.t == 1.0 and clock.sleeps == [0.4, 0.4, 0.2]


async def test_retry_raises_any_other_error_at_once() -> None:
    clock = SteppedClock()

    async def call() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        await retry(call, Poll(10.0, Backoff(0.1), clock), lambda e: isinstance(e, Busy))
    assert clock.sleeps == []


@pytest.mark.parametrize("bad", [dict(first=-1.0), dict(first=1.0, factor=0.5),
                                 dict(first=1.0, cap=-1.0), dict(first=math.nan)])
def test_a_backoff_that_shrinks_or_goes_negative_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="bad backoff"):
        Backoff(**bad)

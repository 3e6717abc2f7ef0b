"""Poll until a deadline, with backoff: the one loop behind every wait and retry.

    async for _ in Poll(30.0, Backoff(0.05)):
        if await done():
            break
    else:
        raise OpFailed("not done after 30s")

The first attempt comes at once. Before each next one the loop sleeps the
next backoff delay, cut short so that the last attempt comes at the
deadline; none starts after it. So a budget is used whole (a retry is never
given up a whole delay early) and never overrun by more than one attempt.
`retry` is the same loop for a call whose errors are sometimes worth
another try. The clock is injected: tests step time without sleeping.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running event loop's monotonic time and `asyncio.sleep`."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


LOOP_CLOCK = LoopClock()


@dataclass(frozen=True)
class Backoff:
    """The pause after attempt 1 is `first`; each next one `factor` times longer, up to `cap`."""

    first: float
    factor: float = 1.0
    cap: float = math.inf

    def __post_init__(self) -> None:
        if not (self.first >= 0 and self.factor >= 1 and self.cap >= 0):
            raise ValueError(f"bad backoff {self}")


@dataclass(frozen=True)
class Poll:
    """Attempts (numbered from 1) for at most `budget` seconds; reusable, each loop anew."""

    budget: float
    backoff: Backoff
    clock: Clock = LOOP_CLOCK

    def __aiter__(self) -> Attempts:
        return Attempts(self)


class Attempts:
    """One run of a Poll: the deadline counts from the first attempt."""

    def __init__(self, poll: Poll) -> None:
        self.poll = poll
        self.count = 0
        self.deadline = 0.0
        self.delay = poll.backoff.first

    def __aiter__(self) -> Attempts:
        return self

    async def __anext__(self) -> int:
        clock, backoff = self.poll.clock, self.poll.backoff
        if self.count == 0:
            self.deadline = clock.now() + self.poll.budget
        else:
            left = self.deadline - clock.now()
            if left <= 0:
                raise StopAsyncIteration
            await clock.sleep(min(self.delay, left))
            self.delay = min(self.delay * backoff.factor, backoff.cap)
        self.count += 1
        return self.count


async def retry(call: Callable[[], Awaitable[T]], poll: Poll,
                retry_if: Callable[[Exception], bool]) -> T:
    """`call()`'s result; an error `retry_if` accepts is tried again until the
    deadline and then raised, any other error at once."""
    error: Exception | None = None
    async for _ in poll:
        try:
            return await call()
        except Exception as e:
            if not retry_if(e):
                raise
            error = e
    assert error is not None  # a Poll always makes a first attempt
    raise error

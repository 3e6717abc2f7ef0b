"""May a member be started now? Exponential back-off per member, as a pure rule.

A member whose etcd keeps exiting (a flag value etcd refuses, corrupt or
unreadable data, a port someone else holds) must never be started again in
a tight loop. The starts of a member since it was last healthy for
`HEALTHY_RESET` seconds in a row form a streak. The first start of a streak
is never held; after the n-th start the next waits `delay(n)`: 1 s, 2 s,
4 s, ... doubling up to 5 minutes. A member that has been healthy for a
minute begins a new streak, so a member killed after a long healthy life is
restarted at once, as before.

A hold also ends when its cause has gone: a member whose etcd stopped for
lack of disk space (its disk had less than SPACE_BACK free when it stopped,
or its exit says "no space left on device") is started as soon as its disk
has SPACE_BACK free again, rather than at the next back-off slot (up to 5 minutes after an
operator freed the disk). Only when the disk was short at the exit: a member
that runs out of space on a disk with room (inodes, a quota) keeps the
ordinary back-off, so this can never become a tight loop.

Times are plain floats (seconds on the wall clock, so that a restarted
daemon carries a streak on): the edge (ckeetcd.support.startbook) keeps the state
and the clock; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

BACKOFF_FIRST = 1.0  # seconds between the first and second start of a streak
BACKOFF_MAX = 300.0  # the cap: a broken member is tried every 5 minutes
HEALTHY_RESET = 60.0  # healthy this long without a break: a new streak
# Free bytes on a member's disk that count as "space is back": one WAL segment,
# the largest single allocation etcd makes (it preallocates 64 MiB per file).
SPACE_BACK = 64 * 1024 * 1024
NO_SPACE = "no space left on device"  # ENOSPC, as Go and Python both word it


@dataclass(frozen=True)
class Starts:
    """A member's start streak: how many starts, the last one, healthy since when."""

    count: int = 0
    last: float | None = None
    healthy_since: float | None = None


def delay(count: int) -> float:
    """How long after the `count`-th start of a streak the next one may be made."""
    if count <= 0:
        return 0.0
    return min(BACKOFF_FIRST * 2.0 ** min(count - 1, 64), BACKOFF_MAX)


def held_until(s: Starts, now: float) -> float | None:
    """When the next start may be made, if not now (None: it may start now).

    A last start in the future (the clock was set back) holds nothing: the
    next start resets `last`, so the rule cannot be wedged by a clock step.
    """
    if s.last is None:
        return None
    until = s.last + delay(s.count)
    return until if s.last <= now < until else None


def started(s: Starts, now: float) -> Starts:
    """The streak after a start at `now` (a start ends any healthy run)."""
    return Starts(count=s.count + 1, last=now, healthy_since=None)


def seen(s: Starts, now: float, healthy: bool) -> Starts:
    """The streak after an observation at `now` found the member `healthy` or not."""
    if not healthy:
        return s if s.healthy_since is None else replace(s, healthy_since=None)
    since = now if s.healthy_since is None or s.healthy_since > now else s.healthy_since
    if s.count and now - since >= HEALTHY_RESET:
        return Starts(count=0, last=s.last, healthy_since=since)
    return replace(s, healthy_since=since)


def out_of_space(exit_text: str) -> bool:
    """Whether an exit (status and reason) says the member's disk was full."""
    return NO_SPACE in exit_text.lower()


def space_is_back(exit_text: str, free_at_exit: int | None, free_now: int | None) -> bool:
    """Whether a hold may end now because the disk that stopped the member has room again.

    The exit was a disk-full one when its disk had less than SPACE_BACK free
    at the time (whatever etcd managed to log: its fatal line may not have
    fit either), or, when that was not measured, when its text says ENOSPC.
    """
    if free_now is None or free_now < SPACE_BACK:
        return False
    if free_at_exit is not None:
        return free_at_exit < SPACE_BACK
    return out_of_space(exit_text)


def lifted(s: Starts) -> Starts:
    """The streak with its hold ended (the count stays: a new failure backs off further)."""
    return replace(s, last=None)

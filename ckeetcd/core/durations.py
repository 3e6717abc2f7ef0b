"""Go duration strings (`24h`, `90m`, `1h30m`, `500ms`, `1.5h`) -> timedelta.

The grammar is Go's `time.ParseDuration`: an optional sign, then one or more
decimal numbers (fraction allowed), each followed by a unit out of `ns`, `us`
(`µs`, `μs`), `ms`, `s`, `m`, `h`; the lone string `0` is zero. Values are
exact integers of nanoseconds and, as in Go, must fit an int64.

Pure: no I/O. Every error names the argument it came from, so a CLI can
print it as is.
"""

from __future__ import annotations

import datetime as dt

from ckeetcd.core.textcheck import quote

NANOSECOND = 1
MICROSECOND = 1000 * NANOSECOND
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # µ: micro sign
    "\u03bcs": MICROSECOND,  # μ: Greek small letter mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_LIMIT = 1 << 63  # Go's time.Duration is an int64 of nanoseconds: |d| <= 1<<63
_DIGITS = "0123456789"
HINT = "Go syntax, e.g. 24h, 90m, 1h30m, 500ms"


class DurationError(ValueError):
    """A duration that cannot be used; the message names the argument.

    `reason` is the message without the argument, for callers (the config
    loader) that print the key themselves.
    """

    def __init__(self, arg: str, reason: str) -> None:
        self.arg = arg
        self.reason = reason
        super().__init__(f"{arg}: {reason}")


def parse_duration_ns(text: str, arg: str = "duration") -> int:
    """Nanoseconds in `text`, exactly as Go's `time.ParseDuration` reads it."""

    def bad(why: str) -> DurationError:
        return DurationError(arg, f"invalid duration {quote(text)}: {why} ({HINT})")

    s = text
    neg = False
    if s[:1] in ("-", "+"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise bad("empty")
    too_large = bad("too large (at most 2562047h47m16.854775807s)")
    total = 0
    while s:
        i = 0
        while i < len(s) and s[i] in _DIGITS:
            i += 1
        whole, s = s[:i], s[i:]
        frac = ""
        if s[:1] == ".":
            i = 1
            while i < len(s) and s[i] in _DIGITS:
                i += 1
            frac, s = s[1:i], s[i:]
        if not whole and not frac:
            raise bad("expected a number" + (f" before {quote(s, 20)}" if s else ""))
        i = 0
        while i < len(s) and s[i] != "." and s[i] not in _DIGITS:
            i += 1
        unit_name, s = s[:i], s[i:]
        if not unit_name:
            raise bad(f"missing unit after {quote(whole + ('.' + frac if frac else ''), 20)}")
        unit = UNITS.get(unit_name)
        if unit is None:
            raise bad(f"unknown unit {quote(unit_name, 20)}")
        v = int(whole or "0")
        if v > _LIMIT // unit:
            raise too_large
        v *= unit
        if frac:
            # Go adds the fraction in float64 (digits past int64 precision dropped);
            # do the same so that every string means the same number of nanoseconds.
            f, scale = _leading_fraction(frac)
            v += int(float(f) * (float(unit) / scale))
            if v > _LIMIT:
                raise too_large
        total += v
        if total > _LIMIT:
            raise too_large
    if not neg and total > _LIMIT - 1:
        raise too_large
    return -total if neg else total


def _leading_fraction(digits: str) -> tuple[int, float]:
    """Go's `leadingFraction`: the digits as an integer while it fits, and their scale."""
    x, scale = 0, 1.0
    for c in digits:
        if x > (_LIMIT - 1) // 10:
            break
        y = x * 10 + int(c)
        if y > _LIMIT:
            break
        x, scale = y, scale * 10
    return x, scale


def parse_duration(text: str, arg: str = "duration") -> dt.timedelta:
    """`text` as a timedelta (Go syntax; negative and zero allowed)."""
    ns = parse_duration_ns(text, arg)
    us = abs(ns) // MICROSECOND  # truncate toward zero, as Go's Duration.Microseconds
    return dt.timedelta(microseconds=-us if ns < 0 else us)


def parse_ttl(text: str, arg: str = "-ttl",
              minimum: dt.timedelta = dt.timedelta(seconds=1)) -> dt.timedelta:
    """A lifetime: a Go duration of at least `minimum` (certificates count whole seconds)."""
    ns = parse_duration_ns(text, arg)
    if ns <= 0:
        raise DurationError(arg, f"duration {quote(text)} must be positive ({HINT})")
    ttl = dt.timedelta(microseconds=ns // MICROSECOND)
    if ttl < minimum:
        raise DurationError(arg, f"duration {quote(text)} is shorter than "
                                 f"{format_duration(minimum)}")
    return ttl


def format_duration(d: dt.timedelta) -> str:
    """Go's `Duration.String()` for whole seconds and above: `24h0m0s`, `1m30s`, `2s`."""
    us = d // dt.timedelta(microseconds=1)
    sign = "-" if us < 0 else ""
    us = abs(us)
    if us == 0:
        return "0s"
    if us < 1_000_000:
        return f"{sign}{us / 1000:g}ms" if us >= 1000 else f"{sign}{us}µs"
    h, rest = divmod(us, 3_600_000_000)
    m, rest = divmod(rest, 60_000_000)
    s = f"{rest / 1_000_000:.6f}".rstrip("0").rstrip(".")
    if h:
        return f"{sign}{h}h{m}m{s}s"
    if m:
        return f"{sign}{m}m{s}s"
    return f"{sign}{s}s"

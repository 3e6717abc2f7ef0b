"""Go duration syntax: the cases of Go's own `time` tests, plus what `-ttl` must refuse."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckeetcd.core.durations import (
    HOUR,
    MICROSECOND,
    MILLISECOND,
    MINUTE,
    SECOND,
    DurationError,
    format_duration,
    parse_duration,
    parse_duration_ns,
    parse_ttl,
)
from ckeetcd.core.textcheck import quote

MAX = (1 << 63) - 1
MIN = -(1 << 63)

# From Go's src/time/time_test.go (parseDurationTests): string -> nanoseconds.
VALID = [
    ("0", 0),
    ("5s", 5 * SECOND),
    ("30s", 30 * SECOND),
    ("1478s", 1478 * SECOND),
    ("-5s", -5 * SECOND),
    ("+5s", 5 * SECOND),
    ("-0", 0),
    ("+0", 0),
    ("5.0s", 5 * SECOND),
    ("5.6s", 5 * SECOND + 600 * MILLISECOND),
    ("5.s", 5 * SECOND),
    (".5s", 500 * MILLISECOND),
    ("1.0s", SECOND),
    ("1.00s", SECOND),
    ("1.004s", SECOND + 4 * MILLISECOND),
    ("1.0040s", SECOND + 4 * MILLISECOND),
    ("100.00100s", 100 * SECOND + MILLISECOND),
    ("10ns", 10),
    ("11us", 11 * MICROSECOND),
    ("12\u00b5s", 12 * MICROSECOND),
    ("12\u03bcs", 12 * MICROSECOND),
    ("13ms", 13 * MILLISECOND),
    ("14s", 14 * SECOND),
    ("15m", 15 * MINUTE),
    ("16h", 16 * HOUR),
    ("3h30m", 3 * HOUR + 30 * MINUTE),
    ("10.5s4m", 4 * MINUTE + 10 * SECOND + 500 * MILLISECOND),
    ("-2m3.4s", -(2 * MINUTE + 3 * SECOND + 400 * MILLISECOND)),
    ("1h2m3s4ms5us6ns", HOUR + 2 * MINUTE + 3 * SECOND + 4 * MILLISECOND + 5 * MICROSECOND + 6),
    ("39h9m14.425s", 39 * HOUR + 9 * MINUTE + 14 * SECOND + 425 * MILLISECOND),
    ("52763797000ns", 52763797000),
    ("0.3333333333333333333h", 20 * MINUTE),
    ("9007199254740993ns", (1 << 53) + 1),
    ("9223372036854775807ns", MAX),
    ("9223372036854775.807us", MAX),
    ("9223372036s854ms775us807ns", MAX),
    ("-9223372036854775808ns", MIN),
    ("-9223372036854775.808us", MIN),
    ("-9223372036s854ms775us808ns", MIN),
    ("-2562047h47m16.854775808s", MIN),
    ("0.100000000000000000000h", 6 * MINUTE),
    ("0.830103483285477580700h", 49 * MINUTE + 48 * SECOND + 372539827),
    # what operators type
    ("24h", 24 * HOUR),
    ("90m", 90 * MINUTE),
    ("8760h", 8760 * HOUR),
    ("87600h", 87600 * HOUR),
    ("1h30m", 90 * MINUTE),
    ("500ms", 500 * MILLISECOND),
    ("1.5h", 90 * MINUTE),
]

# Go refuses all of these; each message names the argument and quotes the input.
INVALID = [
    ("", "empty"),
    ("3", "missing unit"),
    ("-", "empty"),
    ("s", "expected a number"),
    (".", "expected a number"),
    ("-.", "expected a number"),
    (".s", "expected a number"),
    ("+.s", "expected a number"),
    ("1d", 'unknown unit "d"'),
    ("1H", 'unknown unit "H"'),
    ("1 h", 'unknown unit " h"'),
    ("1h ", 'unknown unit "h "'),
    ("\x85\x85", "expected a number"),
    ("hello \xffff world", "expected a number"),
    ("1h-30m", 'unknown unit "h-"'),
    ("9223372036854775808ns", "too large"),
    ("9223372036854775.808us", "too large"),
    ("9223372036854ms775us808ns", "too large"),
    ("-9223372036854775809ns", "too large"),
    ("99999999999999999999999h", "too large"),
]


@pytest.mark.parametrize(("text", "ns"), VALID)
def test_go_durations(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize(("text", "why"), INVALID)
def test_go_refuses(text: str, why: str) -> None:
    with pytest.raises(DurationError) as e:
        parse_duration_ns(text, "-ttl")
    msg = str(e.value)
    assert msg.startswith(f"-ttl: invalid duration {quote(text)}"), msg
    assert why in msg
    assert "24h" in msg  # says what would work


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("24h", dt.timedelta(hours=24)),
        ("-1m", dt.timedelta(minutes=-1)),
        ("1500ns", dt.timedelta(microseconds=1)),
        ("-1500ns", dt.timedelta(microseconds=-1)),  # truncated toward zero, as Go does
        ("0", dt.timedelta(0)),
    ],
)
def test_timedelta(text: str, want: dt.timedelta) -> None:
    assert parse_duration(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("87600h", dt.timedelta(days=3650)),
        ("24h", dt.timedelta(days=1)),
        ("90m", dt.timedelta(minutes=90)),
        ("1s", dt.timedelta(seconds=1)),
        ("1.5s", dt.timedelta(seconds=1.5)),
    ],
)
def test_ttl_accepts(text: str, want: dt.timedelta) -> None:
    assert parse_ttl(text) == want


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0", "must be positive"),
        ("-0", "must be positive"),
        ("-24h", "must be positive"),
        ("0s", "must be positive"),
        ("500ms", "shorter than 1s"),
        ("999999us", "shorter than 1s"),
        ("24", "missing unit"),
        ("forever", "expected a number"),
        ("10y", 'unknown unit "y"'),
    ],
)
def test_ttl_refuses(text: str, why: str) -> None:
    with pytest.raises(DurationError) as e:
        parse_ttl(text, "-ttl")
    assert str(e.value).startswith("-ttl: "), e.value
    assert why in str(e.value)


def test_the_argument_is_named() -> None:
    with pytest.raises(DurationError, match=r"^--renew-before: "):
        parse_ttl("x", "--renew-before")


@pytest.mark.parametrize(
    ("d", "text"),
    [
        (dt.timedelta(hours=24), "24h0m0s"),
        (dt.timedelta(minutes=90), "1h30m0s"),
        (dt.timedelta(seconds=90), "1m30s"),
        (dt.timedelta(seconds=1.5), "1.5s"),
        (dt.timedelta(milliseconds=500), "500ms"),
        (dt.timedelta(microseconds=7), "7µs"),
        (dt.timedelta(0), "0s"),
        (-dt.timedelta(hours=2), "-2h0m0s"),
    ],
)
def test_format_like_go(d: dt.timedelta, text: str) -> None:
    assert format_duration(d) == text


@given(st.timedeltas(min_value=dt.timedelta(days=-100000), max_value=dt.timedelta(days=100000)))
def test_format_then_parse_round_trips(d: dt.timedelta) -> None:
    assert parse_duration(format_duration(d)) == d


@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["h", "m", "s", "ms", "us"])),
                min_size=1, max_size=5))
def test_sums_of_parts(parts: list[tuple[int, str]]) -> None:
    unit = {"h": HOUR, "m": MINUTE, "s": SECOND, "ms": MILLISECOND, "us": MICROSECOND}
    text = "".join(f"{n}{u}" for n, u in parts)
    assert parse_duration_ns(text) == sum(n * unit[u] for n, u in parts)

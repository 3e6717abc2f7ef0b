"""Typed readers of TOML values that collect problems instead of stopping at the first."""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ckeetcd.core.config.schema import HOST_LABEL_RE, MAX_CERT_LIFETIME, NAME_RE, Problem
from ckeetcd.core.durations import DurationError, format_duration, parse_duration
from ckeetcd.core.textcheck import quote, refused_char, show


class Reader:
    """One file's problems, and the readers that add to them."""

    def __init__(self, file: str, base: Path) -> None:
        self.file = file
        self.base = base
        self.problems: list[Problem] = []

    def bad(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.file, key, message))

    def known(self, table: Mapping[str, Any], prefix: str, keys: set[str]) -> None:
        for k in table:
            if k not in keys:
                self.bad(dot(prefix, key_part(k)),
                         f"unknown key (known: {', '.join(sorted(keys))})")

    def table(self, data: Mapping[str, Any], key: str, required: bool = False) -> dict[str, Any]:
        value = data.get(key)
        if value is None:
            if required:
                self.bad(key, "missing table")
            return {}
        if not isinstance(value, dict):
            self.bad(key, "must be a table")
            return {}
        return value

    def string(
        self, t: Mapping[str, Any], prefix: str, key: str, default: str | None = None
    ) -> str | None:
        value = t.get(key, default)
        if value is None:
            self.bad(dot(prefix, key), "missing")
            return None
        if not isinstance(value, str):
            self.bad(dot(prefix, key), "must be a string")
            return None
        why = refused_char(value)
        if why:
            self.bad(dot(prefix, key), f"{show(value)} {why}")
            return None
        return value

    def number(self, t: Mapping[str, Any], prefix: str, key: str, default: float,
               minimum: float, maximum: float, integer: bool = False, unit: str = "",
               off: float | None = None, below_maximum: bool = False) -> float:
        """A finite number in [minimum, maximum] (or `off`, which turns the thing off);
        every refusal names the range."""
        value = t.get(key, default)
        lo, hi = num_text(minimum), num_text(maximum)
        span = (f"at least {lo} and below {hi}" if below_maximum else
                f"between {lo} and {hi}") + (f" {unit}" if unit else "")
        if off is not None:
            span = f"{num_text(off)} (off) or {span}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)
        ):
            self.bad(dot(prefix, key), f"must be {'an integer' if integer else 'a number'}: "
                                        f"{span}")
            return default
        if off is not None and value == off:
            return value
        too_big = value >= maximum if below_maximum else value > maximum
        if (isinstance(value, float) and not math.isfinite(value)) or value < minimum or too_big:
            self.bad(dot(prefix, key), f"must be {span} (got {show(value)})")
            return default
        return value

    def boolean(self, t: Mapping[str, Any], prefix: str, key: str, default: bool) -> bool:
        value = t.get(key, default)
        if not isinstance(value, bool):
            self.bad(dot(prefix, key), "must be true or false")
            return default
        return value

    def strings(self, t: Mapping[str, Any], prefix: str, key: str) -> tuple[str, ...]:
        value = t.get(key, [])
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            self.bad(dot(prefix, key), "must be a list of strings")
            return ()
        ok = True
        for i, item in enumerate(value):
            why = refused_char(item)
            if why:
                self.bad(f"{dot(prefix, key)}[{i}]", f"{show(item)} {why}")
                ok = False
        return tuple(value) if ok else ()

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base / p)

    def name(self, key: str, value: str | None) -> str | None:
        if value is None:
            return None
        if not NAME_RE.fullmatch(value):
            self.bad(key, f"{show(value)} is not a valid name (letters, digits, '.', '_', '-'; "
                          "starts with a letter or digit; at most 63 characters)")
            return None
        return value

    def choice(self, t: Mapping[str, Any], prefix: str, key: str, allowed: tuple[str, ...],
               default: str) -> str:
        value = self.string(t, prefix, key, default)
        if value is not None and value not in allowed:
            self.bad(dot(prefix, key), f"{show(value)} is not one of: {', '.join(allowed)}")
            return default
        return value or default

    def duration(self, t: Mapping[str, Any], prefix: str, key: str, default: dt.timedelta,
                 maximum: dt.timedelta = MAX_CERT_LIFETIME) -> dt.timedelta:
        value = t.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.bad(dot(prefix, key), 'must be a Go duration string such as "8760h"')
            return default
        try:
            d = parse_duration(value, dot(prefix, key))
        except DurationError as e:
            self.bad(dot(prefix, key), e.reason)
            return default
        if d <= dt.timedelta(0):
            self.bad(dot(prefix, key), "must be positive")
            return default
        if d > maximum:
            self.bad(dot(prefix, key), f"must be at most {hours_text(maximum)} (got {show(value)})")
            return default
        return d


def dot(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,60}")


def key_part(key: str) -> str:
    """A key from the file as it can be printed: bare if TOML allows it, else quoted
    (escaped, shortened), e.g. `cluster."a b"`."""
    return key if BARE_KEY.fullmatch(key) else quote(key)


def num_text(x: float) -> str:
    """A bound as an operator writes it: 3600, 0.05 (never 3.6e+03)."""
    if isinstance(x, int) or (x.is_integer() and abs(x) < 1e15):
        return str(int(x))
    return repr(x)


def hours_text(d: dt.timedelta) -> str:
    """A whole-hour duration in Go syntax (87600h), else format_duration's."""
    hours, rest = divmod(d, dt.timedelta(hours=1))
    return f"{hours}h" if not rest else format_duration(d)


def is_host(value: str) -> bool:
    """An IP address or a DNS name (labels of letters, digits, '-', '_'; at most 253)."""
    try:
        ipaddress.ip_address(value)
        return "%" not in value
    except ValueError:
        pass
    return len(value) <= 253 and all(HOST_LABEL_RE.fullmatch(p) for p in value.split("."))


def member_address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `ip` cannot be where a member listens and is reached, or None.

    A member address goes into URLs, certificates (IP SANs) and every peer's
    --initial-cluster: it must name one interface, the same from every host.
    """
    if ip.is_unspecified:
        return "the unspecified address means every interface, not one member"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address):
        if ip == ipaddress.IPv4Address("255.255.255.255"):
            return "the broadcast address"
        if ip in ipaddress.IPv4Network("0.0.0.0/8"):
            return "0.0.0.0/8 means 'this network', it is no host's address"
        if ip.is_reserved:
            return "reserved (240.0.0.0/4), not routable"
    else:
        if ip.scope_id:
            return "a zone index (%...) is local to one host; other members cannot use it"
        if ip.ipv4_mapped is not None:
            return f"an IPv4-mapped IPv6 address: write {ip.ipv4_mapped}"
    if ip.is_link_local:
        return ("link-local: valid on one link only, and without a zone it is ambiguous "
                "(169.254.0.0/16, fe80::/10)")
    return None

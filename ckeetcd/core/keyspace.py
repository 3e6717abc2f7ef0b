"""Key ranges of etcd permissions: pure arithmetic on bytes.

Lives at the bottom of the layers so config validation and the RBAC code
share one definition of "this prefix covers that one".
"""

from __future__ import annotations

REGISTRY_PREFIX = "/registry/"
# ckeetcd's own keys (leader election, daemon presence, certificate requests):
# root only. A user who could write here could have the leader sign a root
# certificate for them, so no user prefix may reach it.
CKEETCD_PREFIX = "/ckeetcd/"
# A user's key prefix: no application needs more (etcd's whole request is 1.5 MiB).
MAX_PREFIX_BYTES = 4096


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end that covers every key starting with `prefix`."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


def key_range(prefix: str) -> tuple[bytes, bytes]:
    """[key, range_end) that a readwrite grant on `prefix` covers."""
    key = prefix.encode()
    return key, prefix_end(key)


def ranges_overlap(a: tuple[bytes, bytes], b: tuple[bytes, bytes]) -> bool:
    """Whether [a0, a1) and [b0, b1) share a key; an end of b"\\0" means "to the end"."""
    (a0, a1), (b0, b1) = a, b
    return (b1 == b"\0" or a0 < b1) and (a1 == b"\0" or b0 < a1)


def prefixes_overlap(a: str, b: str) -> bool:
    """Whether some key lies in both prefix ranges (i.e. one prefix starts with the other)."""
    return ranges_overlap(key_range(a), key_range(b))

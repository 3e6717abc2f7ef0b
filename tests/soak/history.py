"""One client operation as recorded, and how its outcome is classified.

The checker's verdicts rest on the classification: a *definite* failure must
not be in the store at the end, so only errors etcd (or gRPC) returns before
anything was proposed are definite. Everything else that is not ok is
*indeterminate*: the write may or may not have been applied.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

OK, FAILED, INDETERMINATE = "ok", "failed", "indeterminate"

# gRPC codes etcd returns before it proposes anything: auth, bad request,
# quota (NOSPACE, too many requests).
DEFINITE_CODES = frozenset({
    "PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "OUT_OF_RANGE", "UNIMPLEMENTED",
})
# UNAVAILABLE (and UNKNOWN) details that mean the request was never proposed:
# the channel had no connection, or the member refused it up front.
DEFINITE_DETAILS = (
    "failed to connect to all addresses",
    "connection refused",
    "etcdserver: not capable",
    "rpc not supported for learner",
    "raft proposal dropped",  # raft: a follower with no leader does not forward
)


def classify(code: str, details: str) -> str:
    """ok, failed (definitely not applied) or indeterminate, from a gRPC status."""
    if code == "OK":
        return OK
    if code in DEFINITE_CODES:
        return FAILED
    low = details.lower()
    if code in ("UNAVAILABLE", "UNKNOWN") and any(d in low for d in DEFINITE_DETAILS):
        return FAILED
    return INDETERMINATE


@dataclass(frozen=True)
class OpRecord:
    """One put or read. Times are time.monotonic() (one clock for every process)."""

    client: str        # "w0", "r1": a writer or reader, one operation at a time
    kind: str          # "put" | "read"
    start: float
    end: float
    outcome: str       # OK | FAILED | INDETERMINATE
    endpoint: str = ""
    key: str = ""
    value: str = ""
    revision: int = 0  # header.revision of an ok response
    count: int = -1    # reads: keys under the prefix at `revision`
    error: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(line: str) -> OpRecord:
        return OpRecord(**json.loads(line))


def read_history(path: Path) -> list[OpRecord]:
    """Every complete line of a history file."""
    return list(HistoryTail(path).new())


class HistoryTail:
    """Reads a history file as it grows (the workload appends, the engine follows)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def new(self) -> Iterator[OpRecord]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a line being written stays for the next call
        self._offset += end
        for line in data[:end].splitlines():
            if line.strip():
                yield OpRecord.from_json(line.decode())

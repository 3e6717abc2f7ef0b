"""Pure rules about members' lives: which archives go, when a member may start again."""

from __future__ import annotations

import pytest

from ckeetcd.nodes.base import is_archive, prunable

A1 = "data.removed-20240101T000000.000001Z"
A2 = "data.removed-20240101T000000.000002Z"
A3 = "data.removed-20250301T120000.000000Z"
RESTORE = "data.before-restore-20200101T000000.000000Z"


@pytest.mark.parametrize(("names", "keep", "doomed"), [
    ([], 2, []),
    ([A1], 2, []),
    ([A1, A2], 2, []),
    ([A3, A1, A2], 2, [A1]),  # by stamp, not by listing order
    ([A3, A1, A2], 1, [A1, A2]),
    ([A3, A1, A2], 0, [A1, A2, A3]),
    ([A1, A2], 5, []),
    # never: restore archives, a restore's staging dir, the live data dir, look-alikes
    ([RESTORE, "data", "data.restoring", "data.removed-x", "data.removed-script-1",
      f"{A1}.bak", f"x{A1}", A1], 0, [A1]),
    ([A1], -1, [A1]),  # a negative keep keeps none, never more than exist
])
def test_prunable_keeps_the_newest_removed_archives(names: list[str], keep: int,
                                                    doomed: list[str]) -> None:
    assert prunable(names, keep) == doomed


@pytest.mark.parametrize(("name", "archive"), [
    (A1, True), (RESTORE, True), ("data", False), ("data.restoring", False),
    ("etcd.log", False), ("tls", False),
])
def test_what_counts_as_an_archive(name: str, archive: bool) -> None:
    assert is_archive(name) is archive

"""Which pre-change snapshot counts as a rolling change's own (ops/snapshot.py)."""

from __future__ import annotations

import pytest

from ckeetcd.ops.snapshot import TAG_FRESH, kept_for_change

NOW = 1_000_000.0
T1, T2 = "aaaaaaaaaaaa", "bbbbbbbbbbbb"


def snap(stamp: str, tag: str = "", kind: str = "stop-member", member: str = "m1") -> str:
    return f"pre-change-20261201-{stamp}-{kind}-{member}{'-' + tag if tag else ''}.db"


@pytest.mark.parametrize(("taken", "tag", "kept"), [
    ({}, T1, None),                                                   # none yet
    ({snap("100000.000001", T1): NOW - 5}, T1, snap("100000.000001", T1)),  # killed after it
    ({snap("100000.000001", T1): NOW - 5}, "", None),                 # untagged: always a new one
    ({snap("100000.000001", T1): NOW - 5}, T2, None),                 # another change
    # A -> B (T1), B -> A (T2), A -> B again (T1): the first T1 is not this change's
    ({snap("100000.000001", T1): NOW - 60, snap("100100.000001", T2): NOW - 30}, T1, None),
    # a membership change's snapshot after the tagged one: the cluster changed since
    ({snap("100000.000001", T1): NOW - 60,
      snap("100100.000001", kind="remove-member", member="m2"): NOW - 30}, T1, None),
    ({snap("100000.000001", T1): NOW - TAG_FRESH - 1}, T1, None),     # too old to be this one
    ({snap("100000.000001", T2): NOW - 60, snap("100100.000001", T1): NOW - 30,
      snap("100200.000001", T1, member="m2"): NOW - 10},
     T1, snap("100200.000001", T1, member="m2")),
])
def test_only_the_newest_tagged_snapshot_is_the_changes_own(
        taken: dict[str, float], tag: str, kept: str | None) -> None:
    assert kept_for_change(taken, tag, NOW) == kept

"""Which copy of a rotation record wins, the host's file or etcd's (a table): the one
that went further, etcd's on a clash of new CAs, the later rotation of two."""

from __future__ import annotations

import pytest

from ckeetcd.core.carotation import PEER, Record
from ckeetcd.core.rotationsync import Sync, reconcile

R = Record(PEER, "old", started=100.0)
NAMED = Record(PEER, "old", "new", started=100.0)
GRACE = Record(PEER, "old", "new", started=100.0, grace_until=200.0)
DONE = Record(PEER, "old", "new", started=100.0, grace_until=200.0, done=True)
OTHER_NEW = Record(PEER, "old", "n3w", started=100.0)
LATER = Record(PEER, "new", started=300.0)


@pytest.mark.parametrize(("local", "remote", "want"), [
    (None, None, Sync.SAME),
    (R, R, Sync.SAME),
    (R, None, Sync.PUBLISH),  # a rotation started before the mirror, or a put that failed
    (None, R, Sync.TAKE),  # another host started it: this one follows
    (R, NAMED, Sync.TAKE),
    (NAMED, R, Sync.PUBLISH),  # a killed leader named the new CA, not yet in etcd
    (NAMED, GRACE, Sync.TAKE),
    (DONE, GRACE, Sync.PUBLISH),
    (GRACE, DONE, Sync.TAKE),
    (OTHER_NEW, NAMED, Sync.TAKE),  # two new CAs: etcd's (perhaps in use) wins
    (Record(PEER, "old", "n3w", started=100.0, grace_until=5.0), NAMED, Sync.TAKE),
    (DONE, LATER, Sync.TAKE),  # the next rotation, started on another host
    (LATER, DONE, Sync.PUBLISH),
])
def test_reconcile(local: Record | None, remote: Record | None, want: Sync) -> None:
    assert reconcile(local, remote) == want

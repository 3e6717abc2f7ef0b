"""Which copy of a CA rotation's record is in force: this host's file or etcd's mirror.

The record lives in the pki dir of every daemon host (ckeetcd.pki.rotationfiles) and
in etcd under `/ckeetcd/rotation/<role>` (root only, public certificates only), so
that every daemon follows the stages and a new leader continues. Each change of a
record is one step further (the new CA named, the grace begun, done); the copy that
is further wins, so a change a killed daemon wrote to its file but not yet to etcd is
published by it later, never undone. The two copies can disagree only on which new
CA (two leaders each made one before either was published): etcd's, the one that
may be in use already, wins, and the other host holds (its new CA is not the one).
"""

from __future__ import annotations

from enum import StrEnum

from ckeetcd.core.carotation import Record


class Sync(StrEnum):
    SAME = "same"
    TAKE = "take"  # write etcd's copy into this host's file
    PUBLISH = "publish"  # this host's copy is further: put it into etcd (a leader does)


def progress(r: Record) -> tuple[bool, bool, bool]:
    """How far a record went (each step sets one more of these, in this order)."""
    return bool(r.new), bool(r.grace_until), r.done


def same_rotation(a: Record, b: Record) -> bool:
    return (a.role, a.old, a.started, a.migration) == (b.role, b.old, b.started, b.migration)


def reconcile(local: Record | None, remote: Record | None) -> Sync:
    """What to do with the two copies of one role's record (None: that copy is absent)."""
    if local == remote:
        return Sync.SAME
    if remote is None:
        return Sync.PUBLISH
    if local is None:
        return Sync.TAKE
    if not same_rotation(local, remote):  # the later rotation is the one in force
        return Sync.PUBLISH if local.started > remote.started else Sync.TAKE
    if local.new and remote.new and local.new != remote.new:
        return Sync.TAKE
    if progress(local) > progress(remote):
        return Sync.PUBLISH
    return Sync.TAKE

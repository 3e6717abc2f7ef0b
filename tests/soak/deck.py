"""The schedule: which faults, in which order. A seeded deck of kinds.

Dealt like cards: every round is a deck of all the kinds, shuffled by the
run's seed. Every prefix of the schedule has each kind as often as the
others (+-1), so a run of 20 x the number of kinds has exactly 20 of each,
and a run cut short by its time limit is still balanced. `--seed`
reproduces the order, the kinds and the targets.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tests.soak.nemesis import (
    DaemonKilledMidSwap,
    DiskFull,
    Fault,
    Hang,
    Kill,
    Swap,
    Wipe,
)
from tests.soak.restorefault import RestoreKilledMidWay
from tests.soak.rolling import DaemonKilledMidRolling

FAULT_KINDS = ("kill-follower", "kill-leader", "kill-quorum", "hang-follower", "hang-leader",
               "wipe-member", "disk-full", "swap", "swap-under-fault",
               "daemon-killed-mid-swap", "restore-killed-mid-way", "daemon-killed-mid-rolling")


_MEMBER_FAULTS: dict[str, Callable[[], Fault]] = {
    "kill-follower": lambda: Kill(role="follower"),
    "kill-leader": lambda: Kill(role="leader"),
    "kill-quorum": lambda: Kill(count=2),
    "hang-follower": lambda: Hang(role="follower"),
    "hang-leader": lambda: Hang(role="leader"),
    "wipe-member": Wipe,
    "disk-full": DiskFull,
}


def member_fault(kind: str) -> Fault:
    """A fresh fault of one of the kinds that act on members."""
    return _MEMBER_FAULTS[kind]()


MEMBER_FAULTS = ("kill-follower", "kill-leader", "kill-quorum", "hang-follower", "hang-leader",
                 "wipe-member", "disk-full")


def make_fault(kind: str, rng: random.Random, under: tuple[str, ...] = MEMBER_FAULTS,
               ) -> Fault:
    """A fresh fault of `kind`; swap-under-fault draws its fault from `under`."""
    if kind == "daemon-killed-mid-rolling":
        return DaemonKilledMidRolling()
    if kind == "swap":
        return Swap()
    if kind == "swap-under-fault":
        return Swap(under=member_fault(rng.choice(under)))
    if kind == "daemon-killed-mid-swap":
        return DaemonKilledMidSwap()
    if kind == "restore-killed-mid-way":
        return RestoreKilledMidWay()
    return member_fault(kind)


def schedule(rng: random.Random, faults: int, kinds: tuple[str, ...] = FAULT_KINDS,
             disks: bool = True) -> list[Fault]:
    """`faults` faults dealt in rounds: each round is every kind once, shuffled. So at any
    point of the run (a run stopped by its time limit too) every kind has been dealt as
    often as the others, +-1. Without `disks` (no tmpfs disks: not root) disk-full is left
    out, under swaps too."""
    kinds = tuple(k for k in kinds if disks or k != "disk-full")
    under = tuple(k for k in MEMBER_FAULTS if disks or k != "disk-full")
    order: list[str] = []
    while len(order) < faults:
        deck = list(kinds)
        rng.shuffle(deck)
        order += deck
    return [make_fault(k, rng, under) for k in order[:faults]]

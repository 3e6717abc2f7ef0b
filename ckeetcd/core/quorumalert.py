"""When is a loss of quorum real enough to raise the alert? A pure rule.

A voter counts as healthy only if it answered this observation's probe
within the probe deadline (1 s). A member that is running but slow to
answer once (a first connection on a loaded machine, a daemon just
restarted, a moment of CPU starvation) is not a member that is gone: the
soak's long run logged `quorum_lost` at error level for one missed probe,
cleared by the next observation 0.44 s later.

So the alert needs evidence that is not a single timeout:
- at once, when even the voters whose etcd still runs (answering or not)
  are fewer than a quorum: processes that are not running do not answer a
  retry either (kill -9, a full disk, a crash);
- otherwise, when the loss is still seen at least `confirm` seconds after it
  was first seen (`confirm`: one probe deadline, in which a merely slow
  member answers).
Until then the loss is "in doubt": a warning, cleared if the next
observation sees quorum again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["unknown", "held", "doubt", "lost"]

LOST, RESTORED = "quorum_lost", "quorum_restored"                 # error / info (the alert)
IN_DOUBT, DOUBT_CLEARED = "quorum_in_doubt", "quorum_doubt_cleared"  # warning / info


@dataclass(frozen=True)
class Sight:
    """What one observation said about the voters."""

    voters: int
    healthy: int  # answered the probe
    running: int  # etcd running on its node, answering or not (unknown counts as running)
    at: float     # when (monotonic seconds)


@dataclass(frozen=True)
class Watch:
    state: State = "unknown"
    since: float = 0.0  # when the doubt began


def quorum_of(voters: int) -> int:
    return voters // 2 + 1


def step(watch: Watch, sight: Sight, confirm: float) -> tuple[Watch, str]:
    """The next state and the event to log ("" = none) after one observation."""
    need = quorum_of(sight.voters)
    if sight.voters and sight.healthy >= need:
        event = {"lost": RESTORED, "doubt": DOUBT_CLEARED}.get(watch.state, "")
        return Watch("held"), event
    if watch.state == "lost":
        return watch, ""
    if sight.running < need:
        return Watch("lost"), LOST  # the processes are gone: no retry brings them back
    if watch.state == "doubt":
        if sight.at - watch.since >= confirm:
            return Watch("lost"), LOST
        return watch, ""
    return Watch("doubt", sight.at), IN_DOUBT

"""When the daemon may tell systemd READY=1: once the cluster serves.

A unit ordered `After=ckeetcd.service` (a kube-apiserver) starts when
`systemctl start ckeetcd` returns, that is on READY=1. So READY means what
that unit needs: a cluster it can use as kube-apiserver, seen from this node,
whatever this daemon's role (a follower of a healthy cluster is ready as
soon as the bootstrapper or leader is):

- a member answered the member list;
- healthy voters make a quorum, and they agree on a leader;
- RBAC is in place (auth on, root and kube-apiserver with their roles), as
  the observer last checked it.

Until then STATUS= says which of these is missing. Pure: no I/O.
"""

from __future__ import annotations

from ckeetcd.core.model import Observed


def waiting_for(observed: Observed) -> str:
    """What the cluster still lacks before it serves ("" when it serves)."""
    if observed.members is None:
        return "no member answers yet"
    voters = observed.voters()
    healthy = observed.healthy_voters()
    if not observed.has_quorum():
        return f"no quorum yet ({len(healthy)} of {len(voters)} voters healthy)"
    if not observed.leader_id():
        return "no leader yet"
    if observed.rbac_ready is not True:
        return "RBAC not in place yet"
    return ""


def start_status(observed: Observed, phase_text: str) -> tuple[bool, str]:
    """(ready, STATUS text) for a daemon that has not yet sent its first READY=1."""
    missing = waiting_for(observed)
    if not missing:
        return True, phase_text
    return False, f"starting: {missing} ({phase_text})"

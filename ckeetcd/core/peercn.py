"""One shared CN in every peer certificate, and when a member gets `--peer-cert-allowed-cn`.

etcd (3.4+, one value) checks the CN of the other side's verified certificate on
every new peer connection, in both directions: the listener and the dialer share
one TLS config (transport.TLSInfo.baseConfig sets VerifyPeerCertificate when
AllowedCN is set). A member with the flag therefore refuses to talk to any peer
whose certificate carries another CN, whichever side dials. Peer certificates
carry PEER_CN (the member's name stays in a URI SAN); certificates of older
clusters carry the member's name, so the flag must wait for them, or the
cluster splits.

The rule (`blockers`): a member (re)started now gets the flag only when every
other member presents a certificate with PEER_CN: its installed peer.crt has it
(etcd reads that file on every handshake, so the file is what is presented), or
it is not running and has no certificate yet (its start issues one, with the
CN). Anything not known (an unreachable node, an unreadable file, a member the
observer does not read) keeps the flag off: a start without it is always safe,
and the flag is never taken away. Certificates are renewed in place onto the CN
first (ckeetcd.pki.members.member_tls_problem says "peer certificate lacks the
shared CN", one member per cycle); then the running members move onto the flag
by the rolling change (`flag_due`, ckeetcd.core.rollplan.pending), one at a time.

PEER_CN holds a ':', which no etcd user name ckeetcd issues may hold
(ckeetcd.core.config.NAME_RE): a user certificate can never pass for a peer's,
even in a cluster with one CA for peers and clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ckeetcd.core.model import Desired, Observed

PEER_CN = "ckeetcd:peer"
FLAG = "--peer-cert-allowed-cn"
MEMBER_URI = "urn:ckeetcd:member:"  # + the member's name: a peer certificate's URI SAN


@dataclass(frozen=True)
class PeerSide:
    """A member as the flag decision sees it."""

    name: str
    running: bool
    cert_cn: str | None  # CN of its installed peer certificate; "" none installed; None unknown
    flag: str | None  # the flag value its running process got ("" none; None: not recorded)


def presents_cn(m: PeerSide) -> bool:
    """Whether every connection of `m` shows PEER_CN, now and once it runs."""
    return m.cert_cn == PEER_CN or (m.cert_cn == "" and not m.running)


def blockers(members: Sequence[PeerSide], starting: str = "") -> list[str]:
    """Why a member started now may not get the flag, one line per other member that
    could be refused ([] = it may)."""
    out = []
    for m in members:
        if m.name == starting or presents_cn(m):
            continue
        if m.cert_cn is None:
            out.append(f"{m.name}: its peer certificate is not known")
        elif m.cert_cn == "":
            out.append(f"{m.name}: runs without a peer certificate")
        else:
            out.append(f"{m.name}: its peer certificate carries CN {m.cert_cn!r}")
    return out


def due(members: Sequence[PeerSide]) -> tuple[str, ...]:
    """The running members a restart would move onto the flag: none until every member
    presents PEER_CN (then a restart of any of them is safe)."""
    if blockers(members):
        return ()
    return tuple(m.name for m in members if m.running and m.flag != PEER_CN)


def sides(desired: Desired, observed: Observed) -> list[PeerSide]:
    """Every member the observation knows of: the member list and the desired members
    (config order first), by node name."""
    names = [d.name for d in desired.members]
    for m in observed.members or ():
        d = desired.by_peer_url(m.peer_url)
        name = d.name if d else m.name
        if name and name not in names:
            names.append(name)
    out = []
    for name in names:
        r = observed.runtime(name)
        out.append(PeerSide(name, r.running, r.peer_cert_cn if r.reachable else None,
                            r.allowed_cn if r.running else None))
    return out


def start_flag(desired: Desired, observed: Observed, member: str) -> str:
    """The `--peer-cert-allowed-cn` value a start of `member` gets now ("" = none)."""
    return "" if blockers(sides(desired, observed), member) else PEER_CN


def flag_due(desired: Desired, observed: Observed) -> tuple[str, ...]:
    """Members the rolling change restarts onto the flag (node names)."""
    return due(sides(desired, observed))


def change_line() -> str:
    """How a restart onto the flag shows in `plan` and `status` (restart_for)."""
    return f"add {FLAG}={PEER_CN}"

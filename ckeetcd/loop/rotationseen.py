"""What the observer reads for CA rotations (ckeetcd.core.carotation.RotationSeen):
the records in the pki dir, whether each new CA is here, and which CA signed each
member's certificates (their files, on the member's node), and during a client
rotation which CA signed this daemon's own root certificate. The other daemons'
come from their presence keys (ckeetcd.coordination.rotationmirror.daemon_certs, added
by the leader's loop)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ckeetcd.core.carotation import CLIENT, PEER, DaemonCert, RotationSeen
from ckeetcd.nodes import MemberRuntime
from ckeetcd.pki.rotationfiles import (
    Rotation,
    RotationError,
    new_ca_here,
    read_rotations,
    signer_of,
)

DAEMON_CERT = "daemon-root.crt"  # ckeetcd.tasks.daemoncert.daemon_tls (a layer above)
CERT_OF = {PEER: "peer.crt", CLIENT: "server.crt"}  # the member certificate of each role


SignerCache = dict[tuple[str, str, str, str], str]  # (member, role, old, new) -> signer


async def see(pki_dir: Path, runtime: MemberRuntime, names: list[str],
              cache: SignerCache | None = None,
              deep: bool = True) -> tuple[RotationSeen | None, dict[str, Rotation]]:
    """The rotations seen now (None, {} when none was ever started). A member's
    certificate is read again on a deep observation (every interval, and after ops:
    the re-issues are this daemon's own) or for a record not seen before; between,
    `cache` answers (over SSH each read is a command on the node)."""
    try:
        rotations = read_rotations(pki_dir)
    except RotationError:
        return None, {}  # `ckeetcd status` names the file; the daemon does not act on it
    if not rotations:
        return None, {}

    async def member(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        out = []
        for role, rotation in rotations.items():
            key = (name, role, rotation.record.old, rotation.record.new)
            if cache is not None and not deep and key in cache:
                out.append((role, cache[key]))
                continue
            try:
                pem = await runtime.read_tls(name, CERT_OF[role])
            except OSError:
                pem = None
            signer = signer_of(pem, rotation)
            if cache is not None:
                cache[key] = signer
            out.append((role, signer))
        return name, tuple(out)

    cert_from = await asyncio.gather(*(member(n) for n in names))
    daemons: tuple[DaemonCert, ...] = ()
    if CLIENT in rotations:
        try:
            own = (pki_dir / DAEMON_CERT).read_bytes()
        except OSError:
            own = None
        daemons = (DaemonCert("this daemon", signer_of(own, rotations[CLIENT]), me=True),)
    return RotationSeen(
        records=tuple(r.record for r in rotations.values()), cert_from=tuple(cert_from),
        daemons=daemons,
        new_ca=frozenset(role for role, r in rotations.items()
                         if new_ca_here(pki_dir, r, key=True)),
        now=time.time()), rotations

"""Every daemon publishes the membership its config asks for; config drift holds changes.

Each daemon reads its own copy of the config. If one node's copy were stale
and that node became leader, it would undo the last replacement (swap the new
member back for the old), and the next handover could swap it again. So each
daemon keeps `/ckeetcd/daemons/<id>` = the desired members of its config, on
a lease of its own (the key goes when the daemon dies), and the leader makes
no membership change (stop, remove, add, start, promote) while any live
daemon asks for other members (ckeetcd.core.planner holds them): phase
`config-drift`, event `config_drift` naming who wants what, `config_agreed`
once they match. Repairs that change
no membership (restarts, certificates, RBAC, alarms, apiserver traffic) go on.

The value also carries the daemon's root client certificate (public): a client CA
rotation waits until every running daemon's comes from the new CA
(ckeetcd.coordination.rotationmirror.daemon_certs).

A daemon that is down is not asked; once it is back with a stale copy, the
leader holds again until its config is fixed. A leader makes no membership
change before it has read the others' keys once in its term.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from ckeetcd.core.config import Config
from ckeetcd.core.model import Desired
from ckeetcd.core.planner import Membership, membership
from ckeetcd.etcd import EtcdError
from ckeetcd.etcd import lease as leases

PREFIX = b"/ckeetcd/daemons/"
# An edit reaches the daemons a moment apart: changes are held at once, but the
# warning waits this long, so a config rolled out everywhere does not raise it.
DRIFT_GRACE = 5.0


def membership_of(config: Config) -> Membership:
    """(name, peer URL) of every desired member, sorted: what daemons must agree on."""
    return membership(Desired.from_config(config))


def _names(m: Membership) -> list[str]:
    return [name for name, _ in m]


class Presence:
    """This daemon's key under PREFIX, and (when leading) everyone's."""

    def __init__(self, daemon: str, log: Any) -> None:
        self.daemon = daemon
        self.log = log
        self.key = PREFIX + daemon.encode()
        self.lease = 0
        self.published: tuple[Membership, bytes | None] | None = None
        self.peers: dict[str, Membership] | None = None  # None: unread in this term
        self.certs: dict[str, bytes | None] | None = None  # the others' root certificates
        self.drift: dict[str, Membership] = {}
        self._drift_since = 0.0
        self._warned: dict[str, Membership] | None = None  # what config_drift last said

    def new_term(self) -> None:
        self.peers = None
        self.certs = None

    async def refresh(self, client: Any, ttl: int, mine: Membership, leading: bool,
                      cert: bytes | None = None) -> None:
        """Keep our key alive and current (with our root certificate `cert`); as leader,
        read everyone's."""
        if self.lease and await leases.keepalive(client, self.lease) <= 0:
            self.lease, self.published = 0, None
        if not self.lease:
            self.lease, _ = await leases.grant(client, ttl)
            self.published = None
        if self.published != (mine, cert):
            body: dict[str, Any] = {"members": [list(m) for m in mine]}
            if cert is not None:
                body["root_cert"] = cert.decode(errors="replace")
            await client.put(self.key, json.dumps(body).encode(), lease=self.lease)
            self.published = (mine, cert)
        if leading:  # the others: our own copy is `mine`, whatever our key says yet
            others = [(kv.key[len(PREFIX):].decode(errors="replace"), kv.value)
                      for kv in await client.get_prefix(PREFIX)]
            self.peers = {d: parse_membership(v) for d, v in others if d != self.daemon}
            self.certs = {d: parse_cert(v) for d, v in others if d != self.daemon}
            self._log_drift(mine)

    def _log_drift(self, mine: Membership) -> None:
        drift = {d: want for d, want in (self.peers or {}).items() if want != mine}
        now = time.monotonic()
        if drift != self.drift:
            self._drift_since = now
            self.drift = drift
        if drift and drift != self._warned and now - self._drift_since >= DRIFT_GRACE:
            self.log.warning("config_drift", daemon=self.daemon, mine=_names(mine),
                             others={d: _names(w) for d, w in sorted(drift.items())},
                             hint="every daemon's config must list the same [[members]]; "
                                  "membership changes wait until they do")
            self._warned = drift
        elif not drift and self._warned:
            self.log.info("config_agreed", daemon=self.daemon, members=_names(mine))
            self._warned = None

    async def withdraw(self, client: Any) -> None:
        """On a clean stop: our key goes at once."""
        if self.lease:
            with contextlib.suppress(EtcdError):  # else it expires on its own
                await leases.revoke(client, self.lease)
            self.lease = 0


def parse_membership(value: bytes) -> Membership:
    try:
        return tuple(sorted((str(n), str(u)) for n, u in json.loads(value)["members"]))
    except (ValueError, KeyError, TypeError):
        return ()


def parse_cert(value: bytes) -> bytes | None:
    """The root certificate a presence value carries (None: none, an older daemon)."""
    try:
        cert = json.loads(value).get("root_cert")
    except (ValueError, AttributeError):
        return None
    return cert.encode() if isinstance(cert, str) else None

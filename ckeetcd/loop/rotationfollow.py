"""The daemon loop's part in a CA rotation beside the plan: the record's mirror
(ckeetcd.coordination.rotationmirror) brought in sync before each observation, and
after it what every daemon does whether it leads or not: a finished rotation taken
into its own CA files, the client bundle in force for its channels once servers
carry certificates of either CA, and (for the plan) every running daemon's root
certificate from presence."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ckeetcd.coordination.election import Leadership
from ckeetcd.coordination.rotationmirror import (
    RotationMirror,
    daemon_certs,
    follow_client_bundle,
)
from ckeetcd.core.carotation import CLIENT
from ckeetcd.core.config import Config
from ckeetcd.core.model import Desired, Observed
from ckeetcd.core.rotationplan import role_facts, signer_new
from ckeetcd.etcd import ClientPool
from ckeetcd.pki.rotationfiles import RotationError, read_rotation


class RotationFollow:
    def __init__(self, config: Config, pool: ClientPool, leadership: Leadership,
                 log: Any) -> None:
        self.config = config
        self.pool = pool
        self.leadership = leadership
        self.mirror = RotationMirror(config.cluster.pki_dir, leadership.id, log)
        self._url: str | None = None  # a healthy voter of the last observation

    async def before_observe(self) -> None:
        if self._url is not None:
            await self.mirror.sync(self.pool.get(self._url), self.leadership.may_act())

    def after_observe(self, config: Config, desired: Desired,
                      observed: Observed) -> tuple[Observed, bool]:
        """The observation with every daemon's root certificate (client rotations), and
        whether this host's CA files changed (a finished rotation followed)."""
        self.config = config
        self.mirror.pki_dir = pki = config.cluster.pki_dir
        voters = [m for m in observed.healthy_voters() if m.client_urls]
        self._url = voters[0].client_urls[0] if voters and observed.has_quorum() else None
        changed = self.mirror.follow(self.leadership.may_act())
        seen = observed.rotation
        if seen is None or seen.record(CLIENT) is None:
            return observed, changed
        follow_client_bundle(self.pool, pki, signer_new(role_facts(CLIENT, desired, observed)))
        try:
            rotation = read_rotation(pki, CLIENT)
        except RotationError:
            return observed, changed
        try:
            own: bytes | None = self.pool.tls.cert.read_bytes()
        except OSError:
            own = None
        others = self.leadership.presence.certs if config.election else {}
        daemons = daemon_certs(rotation, self.leadership.id, own, others)
        return replace(observed, rotation=replace(seen, daemons=daemons)), changed

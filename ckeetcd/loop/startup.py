"""What a daemon settles before its first cycle: its state dir, its CA, old archives."""

from __future__ import annotations

from typing import Any

from ckeetcd.core.config import Config
from ckeetcd.loop.daemonca import CARefused, open_ca
from ckeetcd.loop.env import Env
from ckeetcd.ops.stop_member import log_pruned
from ckeetcd.pki import CA, CAError, Trust, ca_paths, load_ca
from ckeetcd.support.history import History
from ckeetcd.support.statedir import StateDirError, claim_state_dir


def can_lead(config: Config) -> bool:
    """Leading means issuing certificates: only a daemon holding the CA key can."""
    return ca_paths(config.cluster.pki_dir)[1].exists()


def daemon_ca(config: Config, log: Any) -> Trust | None:
    """The CAs (client, peer) of this daemon; None (logged) when it has none and may make none.

    See ckeetcd.loop.daemonca: a CA is made only on a true first start (by the
    bootstrapper); one that vanished is reported, never replaced. Other
    daemons of an election get it with `ckeetcd ca import`. A daemon that has
    the CA certificate and its own client certificate but not the CA key (a
    `--no-key` import) can follow, never lead.
    """
    try:
        ca, notes = open_ca(config)
    except CARefused as e:
        log.error(e.event, **e.fields)
        return None
    log_notes(log, notes)
    return ca


def log_notes(log: Any, notes: Any) -> None:
    for level, event, fields in notes:
        getattr(log, level)(event, **fields)


def claim(config: Config, log: Any) -> bool:
    """Take the state dir (ckeetcd.support.statedir); False (logged) when it must not be used."""
    try:
        taken = claim_state_dir(config.cluster.state_dir, config.cluster.name,
                                adopt=config.cluster.adopt_state_dir)
    except StateDirError as e:
        log.error("state_dir_refused", file=str(config.path), key="cluster.state_dir",
                  state_dir=str(config.cluster.state_dir), error=str(e))
        return False
    log_notes(log, taken.notes)
    return True


def reload_client_ca(config: Config, trust: Trust, side: list[Any], log: Any) -> Trust:
    """The trust with the client CA read again when a client CA rotation's finish put a
    new ca.crt (and key) in place, handed to the side tasks that sign with it (renewals,
    followers' requests): the daemon signs with the new CA without a restart."""
    cert, key = ca_paths(config.cluster.pki_dir)
    try:
        if cert.read_bytes() == trust.client.cert_pem or not key.exists():
            return trust
        ca = load_ca(config.cluster.pki_dir)
    except (OSError, CAError, ValueError) as e:
        log.warning("ca_reload_failed", file=str(cert), error=str(e))
        return trust
    for task in side:
        if getattr(task, "ca", None) is trust.client:
            task.ca = ca
    log.info("ca_reloaded", role="client", ca_cert=str(cert),
             subject=ca.cert.subject.rfc4514_string())
    return Trust(ca, trust.peer)


def load_ca_for(config: Config) -> CA:
    return load_ca(config.cluster.pki_dir)


async def prune_archives(env: Env, config: Config, history: History, log: Any) -> None:
    """Once at start: removed members' archives beyond `removed_data_keep`, on every node
    (at removal time the stop-member op prunes too). In the background: a node that is
    slow to answer must not hold the first cycle."""
    keep = config.maintenance.removed_data_keep
    try:
        names = await env.runtime.known_members()
    except OSError as e:
        log.warning("archives_prune_failed", error=str(e))
        return
    for name in names:
        try:
            gone = await env.runtime.prune_archives(name, keep)
        except OSError as e:
            log.warning("archives_prune_failed", member=name, error=str(e))
            continue
        if gone:
            log_pruned(log, name, keep, gone)
            history.record(event="archives-pruned", member=name, keep=keep,
                           removed=[a.name for a in gone],
                           freed_bytes=sum(a.bytes for a in gone))


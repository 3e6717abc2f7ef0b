"""`ckeetcd status`: one row per desired or actual member (table or JSON)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
from typing import Any

from ckeetcd.cli.common import load
from ckeetcd.core.config import Config
from ckeetcd.core.etcdversions import bad_release_warning, parse_version
from ckeetcd.core.memberchange import member_change
from ckeetcd.core.model import Desired, Observed
from ckeetcd.core.rollplan import pending, refusal
from ckeetcd.core.rotationplan import rotation_lines, rotation_view
from ckeetcd.loop.env import make_env
from ckeetcd.pki.expiry import trust_view
from ckeetcd.support.startbook import StartBook, iso
from ckeetcd.tasks.daemoncert import daemon_tls
from ckeetcd.tasks.keymodes import status_view


def rows(desired: Desired, observed: Observed) -> list[dict[str, Any]]:
    """Desired members first (config order), then members only the cluster knows."""
    leader = observed.leader_id()
    out = []
    seen: set[int] = set()
    for d in desired.members:
        live = observed.live_by_peer_url(d.peer_url)
        out.append(_row(observed, d.name, live, d.client_url, leader, desired=True))
        if live:
            seen.add(live.id)
    for m in observed.members or ():
        if m.id not in seen:
            out.append(_row(observed, m.name, m, m.client_urls[0] if m.client_urls else "",
                            leader, desired=False))
    return out


def _row(observed: Observed, name: str, live: Any, client_url: str, leader: int,
         desired: bool) -> dict[str, Any]:
    h = observed.health.get(live.id) if live else None
    rt = observed.runtimes.get(name)
    return {
        "name": name,
        "id": f"{live.id:x}" if live else None,
        "client_url": client_url,
        "healthy": bool(h and h.healthy),
        "learner": bool(live and live.learner),
        "leader": bool(live and live.id == leader),
        "db_size": h.db_size if h and h.healthy else None,
        "in_cluster": live is not None,
        "desired": desired,
        # a node that cannot be reached says nothing of its member: unknown, not stopped
        "node_reachable": rt.reachable if rt else None,
        "running": rt.running if rt and rt.reachable else None,
        "pid": rt.pid if rt and rt.reachable else None,
        "error": (h.error if h and not h.healthy else "") or (rt.error if rt else ""),
        "version": (h.version or None) if h and h.healthy else None,
        "version_warning": bad_release_warning(parse_version(h.version)) or None
        if h and h.healthy else None,
        "restart_for": list(member_change(rt, h)) or None if rt else None,
        "restart_unknown": (rt.change_unknown or None) if rt and rt.running else None,
    }


async def gather(config: Config) -> tuple[Desired, Observed]:
    """Observe once, read-only; before the first start there is nothing to ask."""
    if not daemon_tls(config).cert.exists():
        return Desired.from_config(config), Observed(members=None)
    env = make_env(config, readonly=True)
    try:
        desired = Desired.from_config(config)
        return desired, await env.observer.observe(desired)
    finally:
        await env.close()


async def daemons(config: Config, observed: Observed,
                  ) -> tuple[str | None, list[dict[str, Any]] | None]:
    """The leader daemon's id, and every live daemon with the members its config lists.

    (None, None) without an election or when no healthy voter answers.
    """
    if not config.election or not observed.healthy_voters():
        return None, None
    from ckeetcd.coordination.election import LEADER_KEY
    from ckeetcd.coordination.presence import PREFIX, membership_of, parse_membership
    from ckeetcd.etcd import ClientPool, EtcdError

    mine = membership_of(config)
    pool = ClientPool(daemon_tls(config), config.daemon.rpc_timeout)
    try:
        for m in observed.healthy_voters():
            client = pool.get(m.client_urls[0]) if m.client_urls else None
            if client is None:
                continue
            try:
                kv, present = await asyncio.gather(client.get(LEADER_KEY),
                                                   client.get_prefix(PREFIX))
            except EtcdError:
                continue
            try:
                leader = str(json.loads(kv.value).get("id")) if kv else None
            except ValueError:
                leader = None
            wants = {p.key[len(PREFIX):].decode(errors="replace"): parse_membership(p.value)
                     for p in present}
            listed = [{"id": d, "members": [n for n, _ in want], "same_members": want == mine}
                      for d, want in wants.items()]
            return leader, listed
        return None, None
    finally:
        await pool.close()


async def archive_usage(config: Config, names: list[str]) -> dict[str, int | None]:
    """Bytes of moved-aside data dirs per member: `names` and every member with a dir
    on a node (a removed member's too); None when its node did not answer."""
    from ckeetcd.nodes.router import RoutedRuntime, make_runtime

    runtime = make_runtime(config)

    async def one(name: str) -> int | None:
        try:
            return sum(a.bytes for a in await runtime.archives(name))
        except (OSError, TimeoutError):
            return None

    try:
        try:
            known = await runtime.known_members()
        except OSError:
            known = []
        every = list(dict.fromkeys([*names, *known]))
        return dict(zip(every, await asyncio.gather(*(one(n) for n in every)), strict=True))
    finally:
        if isinstance(runtime, RoutedRuntime):
            await runtime.close()


def status(args: argparse.Namespace) -> int:
    config = load(args)
    desired, observed = asyncio.run(gather(config))
    leader, present = asyncio.run(daemons(config, observed))
    table = rows(desired, observed)
    archived = asyncio.run(archive_usage(config, [r["name"] for r in table]))
    for r in table:
        r["archived_bytes"] = archived.get(r["name"])
    archived_total = sum(b for b in archived.values() if b)
    book = StartBook(config.cluster.state_dir, readonly=True)
    for r in table:
        rt = observed.runtimes.get(r["name"])
        r["last_exit"] = book.last_exit(r["name"])
        r["restart_held_until"] = iso(rt.held_until) if rt and rt.held_until else None
    paused = "[daemon] paused = true" if config.daemon.paused else observed.paused
    alarms = [{"member_id": f"{i:x}", "alarm": a} for i, a in observed.alarms]
    restoring = {n: r.restoring for n, r in sorted(observed.runtimes.items()) if r.restoring}
    keys = status_view(config.cluster.state_dir)
    trust = trust_of(config, observed)
    restarts = pending(desired, observed)
    for r in table:  # the rolling change's view: a restart onto --peer-cert-allowed-cn too
        rt = observed.runtimes.get(r["name"])
        if r["name"] in restarts:
            r["restart_for"] = list(restarts[r["name"]])
        r["peer_cert_allowed_cn"] = rt.allowed_cn or None if rt and rt.running else None
    refused = refusal(desired, observed) if restarts else ""
    rotation = rotation_view(desired, observed)
    if args.output == "json":
        print(json.dumps({"cluster": config.cluster.name,
                          "reachable": observed.members is not None,
                          "quorum": observed.has_quorum(),
                          "leader_daemon": leader,
                          "daemons": present,
                          "paused": paused or None,
                          "alarms": alarms,
                          "restoring": restoring or None,
                          "key_modes": keys or None,
                          "trust": trust,
                          "rotation": rotation,
                          "archived_bytes": archived_total,
                          "archived": {n: b for n, b in archived.items() if b},
                          "cluster_version": observed.cluster_version or None,
                          "auth_hold": observed.auth_hold() or None,
                          "upgrade_refused": refused or None,
                          "members": table}, indent=2))
        return 0
    cols = ["name", "id", "client_url", "healthy", "learner", "leader", "db_size", "running", "pid",
            "version"]
    cells = [[_cell(r[c]) for c in cols] for r in table]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    if observed.members is None:
        print("cluster: no member answers")
    if observed.cluster_version:
        print(f"cluster version: {observed.cluster_version}")
    for r in table:
        if r["version_warning"]:
            print(f"warning: {r['name']}: {r['version_warning']}")
    if observed.auth_hold():
        print(f"auth held: {observed.auth_hold()}")
    for name, change in restarts.items():
        print(f"restart pending: {name}: {', '.join(change)}")
    for r in table:
        if r["restart_unknown"]:
            print(f"restart unknown: {r['name']}: {r['restart_unknown']}")
    if refused:
        print(f"upgrade refused: {refused}")
    for a in alarms:
        print(f"alarm: {a['alarm']} (member {a['member_id']})")
    if paused:
        print(f"paused: {paused}")
    for d in present or ():
        same = "same members as here" if d["same_members"] else \
            f"OTHER members: {', '.join(d['members'])} (membership changes wait)"
        print(f"daemon: {d['id']}{' (leader)' if d['id'] == leader else ''}: {same}")
    for name, note in restoring.items():
        print(f"restoring: {name}: {note} (no daemon acts until the restore ends)")
    for k in keys:
        print(f"key: {k['path']}: {_key_line(k)}")
    print(_trust_line(trust))
    for line in rotation_lines(rotation):
        print(line)
    for w in trust["warnings"]:
        print(f"certificate: {w}")
    for r in table:
        if r["node_reachable"] is False:
            print(f"unreachable: {r['name']}'s node: {r['error'] or 'no answer'} "
                  "(whether its member runs is not known)")
        last = r["last_exit"]
        if last and not r["healthy"]:
            after = f" after {last['ran_for']:g}s" if last.get("ran_for") is not None else ""
            never = " (never healthy)" if last.get("became_healthy") is False else ""
            why = f": {last['reason']}" if last.get("reason") else ""
            print(f"last exit: {r['name']} at {last['time']}: {last['status']}{after}{never}{why}")
        if r["restart_held_until"]:
            print(f"restart held: {r['name']} until {r['restart_held_until']} (back-off after "
                  f"{last['starts'] if last else '?'} starts without a healthy minute)")
    if archived_total:
        per = ", ".join(f"{n} {_size(b)}" for n, b in archived.items() if b)
        print(f"archived data (moved aside, newest {config.maintenance.removed_data_keep} "
              f"removals kept per member): {_size(archived_total)} ({per})")
    return 0


def trust_of(config: Config, observed: Observed) -> dict[str, Any]:
    """CAs, the daemon's certificate and the members' (ckeetcd.pki.expiry.trust_view)."""
    tls = config.tls
    return trust_view(config.cluster.pki_dir, daemon_tls(config).cert, observed.cert_expiry,
                      member_warn=tls.member_cert_renew_before / 2,
                      daemon_warn=tls.daemon_cert_lifetime / 6,
                      now=dt.datetime.now(dt.timezone.utc))


def _trust_line(trust: dict[str, Any]) -> str:
    cas = ", ".join(f"{role} CA until {e['not_after']}" for role, e in trust["cas"].items())
    if trust["layout"] == "separate":
        return f"trust: separate peer and client CAs ({cas})"
    if trust["layout"] == "one-ca":
        return (f"trust: one CA for peers and clients ({cas}): a cluster made before the peer "
                "CA; any client certificate also passes the peer port")
    return "trust: no CA yet"


def _key_line(k: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(k["at"]))
    if k["fixed"]:
        again = "; OPEN TO OTHERS AGAIN" if k["bad_now"] else ""
        return f"was mode {k['mode']} (readable by others), set to 0600 at {when}{again}"
    return f"mode {k['mode']}, readable by others, NOT fixed: {k['problem']} (seen {when})"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)

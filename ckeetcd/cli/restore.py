"""`ckeetcd restore --from SNAPSHOT [--yes] [--force]`: rebuild the cluster from a snapshot.

For a cluster that lost quorum (or whose data is unusable). The procedure an
operator follows:

    systemctl stop ckeetcd          # on EVERY node that runs a daemon for this cluster
    ckeetcd restore --from /var/lib/ckeetcd/backups/etcd-20260101-120000.backup
    systemctl start ckeetcd         # everywhere: they find a healthy cluster and carry on

Why the daemon must be stopped: the restore takes the daemon's state-dir lock
(`STATE_DIR/daemon.lock`) for its whole run, so no daemon can start, stop or
re-add members while the cluster is rebuilt; if a daemon holds the lock, the
restore refuses and names its PID. The lock only covers this machine's state
dir: daemons on other nodes (leader election needs a quorum the cluster has
lost, so nothing fences them now) must be stopped by the operator. (A daemon
that sees lost quorum only waits: it logs `quorum_lost` and restarts only
stopped members that still have their data.)

The snapshot and the cluster are checked first, the plan is printed, and the
command asks before changing anything (`--yes` skips the question). See
`ckeetcd.procedures.restore` for the steps. Data dirs are moved aside, never deleted.

Exit status: 0 restored and healthy; 1 declined at the prompt (nothing
changed) or failed partway (what was done is printed, old data is kept);
2 refused and nothing changed: bad usage, a missing, corrupted or truncated
snapshot, a running daemon, a cluster that still has quorum (without
`--force`), no CA.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ckeetcd.cli.certs import CommandFailed, load_signing_ca
from ckeetcd.cli.common import load
from ckeetcd.cli.errors import USAGE_ERROR, UsageError

if TYPE_CHECKING:
    from ckeetcd.core.config import Config
    from ckeetcd.etcd.client import PemTLS
    from ckeetcd.pki import CA
    from ckeetcd.procedures.restore import ClusterState, Plan, SnapshotInfo

RESTORE_ROOT_LIFETIME = dt.timedelta(hours=1)


class Refused(Exception):
    """Nothing was changed (exit 2)."""


def restore(args: argparse.Namespace) -> int:
    if not args.snapshot:
        raise UsageError("--from: must name a snapshot file")
    config = load(args)
    snapshot = Path(args.snapshot).absolute()
    try:
        return _restore(args, config, snapshot)
    except Refused as e:
        print(f"error: {e}\nnothing was changed", file=sys.stderr)
        return USAGE_ERROR


def _restore(args: argparse.Namespace, config: Config, snapshot: Path) -> int:
    from ckeetcd.procedures.restore import inside_data_dirs
    from ckeetcd.support.statelock import LOCK_FILE, acquire_state_lock

    state = config.cluster.state_dir
    if not state.is_dir():
        raise Refused(f"{state}: no such state dir (cluster.state_dir in {config.path}); "
                      "there is no cluster here to restore")
    if inside_data_dirs(snapshot, state):
        raise Refused(f"--from: {snapshot} lies inside a member's data dir, which the restore "
                      "moves aside; copy it elsewhere first")
    try:
        ca = load_signing_ca(config)
    except CommandFailed as e:
        raise Refused(str(e)) from None
    tls = _root_tls(ca)
    # Both read-only, at once, before the lock: a bad file is news even beside a daemon.
    info, cluster = asyncio.run(_check(config, snapshot, tls))
    lock = acquire_state_lock(state)
    if lock is None:
        holder = _read(state / LOCK_FILE)
        raise Refused(f"pid {holder} (the ckeetcd daemon, or another restore) holds "
                      f"{state / LOCK_FILE}: stop the daemon first (e.g. systemctl stop "
                      "ckeetcd), run the restore, then start it again")
    try:
        plan = asyncio.run(_prepare(config, info, cluster, force=args.force))
        print("\n".join(plan.describe()))
        if not args.yes and not _confirm():
            print("aborted: nothing was changed")
            return 1
        return asyncio.run(_execute(config, plan, ca, tls))
    finally:
        os.close(lock)


async def _check(config: Config, snapshot: Path,
                 tls: PemTLS) -> tuple[SnapshotInfo, ClusterState]:
    from ckeetcd.nodes.local import resolve_etcdutl_binary
    from ckeetcd.procedures.restore import RestoreRefused, check_snapshot, probe_cluster

    try:
        etcdutl = resolve_etcdutl_binary(config.etcd.binary)
    except FileNotFoundError as e:
        raise Refused(str(e)) from None
    checked, probed = await asyncio.gather(check_snapshot(snapshot, etcdutl),
                                           probe_cluster(config, tls), return_exceptions=True)
    if isinstance(checked, RestoreRefused):
        raise Refused(str(checked)) from None
    if isinstance(checked, BaseException):
        raise checked
    if isinstance(probed, BaseException):
        raise probed
    return checked, probed


async def _prepare(config: Config, info: SnapshotInfo, cluster: ClusterState,
                   force: bool) -> Plan:
    from ckeetcd.loop.env import make_env
    from ckeetcd.procedures.restore import make_plan

    if cluster.has_quorum and not force:
        raise Refused(f"the cluster has quorum: {cluster.describe()}. A restore would throw "
                      "away every write since the snapshot; use --force if its data is "
                      "unusable and must be replaced")
    env = make_env(config, readonly=True)  # the daemon's own runtime for this config
    try:
        return await make_plan(config, env.runtime, info, cluster)
    finally:
        await env.close()


async def _execute(config: Config, plan: Plan, ca: CA, tls: PemTLS) -> int:
    from ckeetcd.loop.env import make_env
    from ckeetcd.procedures.restore import RestoreFailed, Restorer
    from ckeetcd.support import logs
    from ckeetcd.support.history import History

    start = time.monotonic()
    history = History(config.cluster.state_dir, config.maintenance.log_max_bytes)
    history.record(event="restore-begin", op="restore-cluster", snapshot=str(plan.snapshot.path),
                   revision=plan.snapshot.revision)
    env = make_env(config, readonly=True)
    restorer = Restorer(plan=plan, runtime=env.runtime, ca=ca, tls=tls, log=logs.get(),
                        say=_say, history=history)
    try:
        await restorer.run()
    except RestoreFailed as e:
        history.record(event="restore-end", op="restore-cluster", outcome="error", error=str(e))
        print(f"error: restore failed: {e}", file=sys.stderr)
        return 1
    finally:
        await env.close()
    took = round(time.monotonic() - start, 3)
    history.record(event="restore-end", op="restore-cluster", outcome="ok", duration=took)
    print(f"restored cluster {config.cluster.name!r} from {plan.snapshot.path} "
          f"(revision {plan.snapshot.revision}) in {took}s; start the daemon again "
          "(e.g. systemctl start ckeetcd)")
    return 0


def _root_tls(ca: CA) -> PemTLS:
    """A root client certificate for this run only, held in memory."""
    from ckeetcd.etcd.client import PemTLS

    pair = ca.issue("root", RESTORE_ROOT_LIFETIME)
    return PemTLS(ca=ca.cert_pem, cert=pair.cert_pem, key=pair.key_pem)


def _confirm() -> bool:
    try:
        answer = input("Proceed? This stops every member of the cluster. [y/N] ")
    except EOFError:
        print()
        return False
    return answer.strip().lower() in ("y", "yes")


def _say(line: str) -> None:
    print(line, flush=True)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"

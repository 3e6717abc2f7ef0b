"""`ckecli etcd user-add USER PREFIX` and `ckecli etcd user-remove USER`.

A user has no password (it authenticates with a certificate whose CN is its
name, see `ckecli etcd issue`) and one role of the same name granting
readwrite on `[PREFIX, prefix_end(PREFIX))`. Both commands are idempotent:
running one twice changes nothing the second time and exits 0.

Everything is checked before the cluster is contacted, and a refusal exits 2
having changed nothing:

- `root` is ckeetcd's own; `kube-apiserver` owns `/registry/` and nobody
  else may be granted a range that intersects it (`/`, `/reg`,
  `/registry/x`); neither can be removed;
- users declared in the config's `[[users]]` are the daemon's to keep: it
  would undo a different prefix or a removal, so the CLI refuses them, and
  with `[rbac] prune_users = true` it refuses to add a user the daemon would prune;
- an existing user whose role grants something else is not silently
  re-granted (an application would lose its access over a typo): the
  command refuses, showing the grant in place, unless `--replace` is given,
  and then prints the old and the new grant.

To talk to etcd the command signs itself a root certificate valid a few
minutes, held in memory only, and uses the first desired member that answers
as a healthy voter.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
from typing import TYPE_CHECKING

from ckeetcd.cli.certs import CommandFailed, check_user_name, fail, load_signing_ca
from ckeetcd.cli.common import load
from ckeetcd.cli.errors import UsageError
from ckeetcd.core.config import Config
from ckeetcd.core.keyspace import CKEETCD_PREFIX, MAX_PREFIX_BYTES
from ckeetcd.core.model import KUBE_APISERVER, Desired, DesiredUser
from ckeetcd.core.textcheck import show

if TYPE_CHECKING:
    from ckeetcd.etcd.client import EtcdClient, PemTLS
    from ckeetcd.pki import CA

ROOT = "root"
CLI_ROOT_LIFETIME = dt.timedelta(minutes=5)
OP_TIMEOUT = 5.0
NUL = b"\0"  # as a range end: up to the end of the keyspace


# ---- checks (pure) -----------------------------------------------------------


def check_add(user: str, prefix: str) -> None:
    """Refuse what `user-add USER PREFIX` must never do; UsageError names the argument."""
    check_user_name(user)
    if user == ROOT:
        raise UsageError("USER: 'root' is managed by ckeetcd itself")
    if prefix == "":
        raise UsageError("PREFIX: must not be empty")
    if user == KUBE_APISERVER.name and prefix != KUBE_APISERVER.prefix:
        raise UsageError(
            f"USER: {user!r} is managed by ckeetcd itself: readwrite on "
            f"{KUBE_APISERVER.prefix!r} only, which PREFIX {show(prefix)} would replace"
        )
    if len(prefix.encode()) > MAX_PREFIX_BYTES:
        raise UsageError(f"PREFIX: {show(prefix)} is longer than {MAX_PREFIX_BYTES} bytes")
    if user != KUBE_APISERVER.name and covers_registry(prefix):
        raise UsageError(
            f"PREFIX: {show(prefix)} overlaps {KUBE_APISERVER.prefix!r}, which belongs to "
            f"{KUBE_APISERVER.name}; choose a prefix outside it (e.g. '/{user}/')"
        )
    if covers_own_keys(prefix):
        raise UsageError(
            f"PREFIX: {show(prefix)} overlaps {CKEETCD_PREFIX!r}, ckeetcd's own keys (leader "
            f"election, daemon certificates), root only; choose another (e.g. '/{user}/')"
        )


def check_remove(user: str) -> None:
    check_user_name(user)
    if user in (ROOT, KUBE_APISERVER.name):
        raise UsageError(f"USER: {user!r} is managed by ckeetcd itself and cannot be removed")


def covers_own_keys(prefix: str) -> bool:
    """Whether a readwrite grant on `prefix` would reach ckeetcd's own keys."""
    from ckeetcd.etcd.rbac import prefixes_overlap

    return prefixes_overlap(prefix, CKEETCD_PREFIX)


def covers_registry(prefix: str) -> bool:
    """Whether a readwrite grant on `prefix` would reach any key under /registry/."""
    from ckeetcd.etcd.rbac import prefixes_overlap

    return prefixes_overlap(prefix, KUBE_APISERVER.prefix)


def daemon_managed(config: Config) -> dict[str, str]:
    """User -> prefix the daemon keeps in place (kube-apiserver and `[[users]]`)."""
    return {u.name: u.prefix for u in Desired.from_config(config).users}


def check_add_against_config(config: Config, user: str, prefix: str) -> None:
    managed = daemon_managed(config)
    if user in managed and managed[user] != prefix:
        raise UsageError(
            f"PREFIX: {user!r} is declared in {config.path} with prefix "
            f"{show(managed[user])}; the daemon would undo {show(prefix)} (edit the config "
            "instead)"
        )
    if config.prune_users and user not in managed:
        raise UsageError(
            f"USER: [rbac] prune_users = true in {config.path}: the daemon would remove {user!r}; "
            "declare it in [[users]] instead"
        )


def check_remove_against_config(config: Config, user: str) -> None:
    if user in daemon_managed(config):
        raise UsageError(
            f"USER: {user!r} is declared in [[users]] of {config.path}; the daemon would "
            "re-create it (remove it from the config instead)"
        )


def show_range(prefix: str) -> str:
    from ckeetcd.etcd.rbac import key_range

    key, end = key_range(prefix)
    return _show_span(key, end)


def _show_span(key: bytes, end: bytes) -> str:
    if not end:
        return f"[{_show(key)}]"  # a single key
    return f"[{_show(key)}, {'end' if end == NUL else _show(end)})"


PERM_NAMES = {0: "read", 1: "write", 2: "readwrite"}


def show_grants(perms: tuple[tuple[int, bytes, bytes], ...]) -> str:
    """A role's permissions as an operator reads them, e.g. `readwrite on ["/a/", "/a0")`."""
    if not perms:
        return "no permissions"
    return ", ".join(f"{PERM_NAMES.get(t, str(t))} on {_show_span(k, e)}" for t, k, e in perms)


def grant_conflict(user: str, prefix: str, have: tuple[tuple[int, bytes, bytes], ...] | None,
                   want: tuple[tuple[int, bytes, bytes], ...], replace: bool) -> str:
    """Why `user-add USER PREFIX` must not touch an existing grant; "" when it may.

    A missing role or one without permissions loses nothing; the same grant is
    a no-op. Anything else would take access away, so it needs `--replace`.
    """
    if replace or not have or set(have) == set(want):
        return ""
    return (f"USER: {user!r} already exists with {show_grants(have)}; "
            f"user-add would replace that with readwrite on {show_range(prefix)}. "
            "Run it again with --replace to do so, or choose another user name")


def _show(b: bytes) -> str:
    return json.dumps(b.decode("utf-8", "backslashreplace"))


# ---- talking to etcd -----------------------------------------------------------


def cli_root_tls(ca: CA) -> PemTLS:
    """A root client certificate valid a few minutes, never written anywhere."""
    from ckeetcd.etcd.client import PemTLS

    pair = ca.issue(ROOT, CLI_ROOT_LIFETIME)
    return PemTLS(ca=ca.cert_pem, cert=pair.cert_pem, key=pair.key_pem)


async def connect(config: Config, tls: PemTLS) -> EtcdClient:
    """A client to the first desired member that answers as a healthy voter.

    All members are asked at once, each with the daemon's RPC deadline, so a
    dead member costs nothing and a hung one at most that deadline.
    """
    from ckeetcd.etcd.client import EtcdClient

    probe_timeout = config.daemon.rpc_timeout
    clients = [EtcdClient(config.client_url(m), tls, timeout=max(OP_TIMEOUT, probe_timeout))
               for m in config.members]
    pending = {asyncio.ensure_future(c.status(timeout=probe_timeout)): c for c in clients}
    chosen: EtcdClient | None = None
    errors: list[str] = []
    try:
        while pending and chosen is None:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                c = pending.pop(task)
                exc = task.exception()
                if exc is not None:
                    errors.append(f"{c.endpoint}: {exc}"
                                  if not str(exc).startswith(c.endpoint) else str(exc))
                elif task.result().learner:
                    errors.append(f"{c.endpoint}: a learner")
                elif not task.result().healthy:
                    errors.append(f"{c.endpoint}: {task.result().error or 'unhealthy'}")
                elif chosen is None:
                    chosen = c
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for c in clients:
            if c is not chosen:
                await c.close()
    if chosen is None:
        raise CommandFailed("no member answered as a healthy voter: " + "; ".join(errors))
    return chosen


def _run(config: Config, job: str, user: str, prefix: str = "",
         replace: bool = False) -> tuple[list[str], str]:
    """Sign the CLI's root certificate, connect, and add or remove `user`.

    Returns the changes and, for an add, the grant that was in place before.
    """
    from ckeetcd.etcd.client import EtcdError
    from ckeetcd.etcd.rbac import ensure_user, remove_user, wanted_perms

    ca = load_signing_ca(config)
    tls = cli_root_tls(ca)

    async def go() -> tuple[list[str], str]:
        client = await connect(config, tls)
        try:
            if job == "add":
                wanted = DesiredUser(user, prefix)
                have = await client.role_get(user)
                refusal = grant_conflict(user, prefix, have, wanted_perms(wanted), replace)
                if refusal:
                    raise UsageError(refusal)
                return await ensure_user(client, wanted), show_grants(have) if have else ""
            return await remove_user(client, user), ""
        finally:
            await client.close()

    try:
        return asyncio.run(go())
    except EtcdError as e:
        raise CommandFailed(str(e)) from None


# ---- commands ------------------------------------------------------------------


def user_add(args: argparse.Namespace) -> int:
    """`user-add USER PREFIX`: user + role with readwrite on PREFIX only."""
    check_add(args.user, args.prefix)
    config = load(args)
    check_add_against_config(config, args.user, args.prefix)
    try:
        changes, before = _run(config, "add", args.user, args.prefix, args.replace)
    except CommandFailed as e:
        return fail(e)
    for change in changes:
        print(change)
    if changes and before:
        print(f"user {args.user}: replaced {before}")
    print(f"user {args.user}: readwrite on {show_range(args.prefix)}"
          + ("" if changes else " (no change)"))
    return 0


def user_remove(args: argparse.Namespace) -> int:
    """`user-remove USER`: remove the user and its role."""
    check_remove(args.user)
    config = load(args)
    check_remove_against_config(config, args.user)
    try:
        changes, _ = _run(config, "remove", args.user)
    except CommandFailed as e:
        return fail(e)
    for change in changes:
        print(change)
    print(f"user {args.user}: " + ("removed" if changes else "not present (no change)"))
    return 0


"""Users, roles and auth: check and converge, idempotently.

Certificates are the only credential: users are created with `no_password`
and etcd takes the user name from the client certificate's CN. Each managed
user has a role of the same name granting readwrite on exactly its prefix.
"""

from __future__ import annotations

import asyncio

from aetcd import rpc

from ckeetcd.core.keyspace import key_range, prefix_end, prefixes_overlap, ranges_overlap
from ckeetcd.core.model import Desired, DesiredUser
from ckeetcd.etcd.client import EtcdClient

ROOT = "root"

__all__ = ["key_range", "prefixes_overlap", "ranges_overlap"]  # re-exported for the CLI


def wanted_perms(user: DesiredUser) -> tuple[tuple[int, bytes, bytes], ...]:
    prefix = user.prefix.encode()
    return ((rpc.Permission.READWRITE, prefix, prefix_end(prefix)),)


async def user_in_place(client: EtcdClient, user: DesiredUser) -> bool:
    roles, perms = await asyncio.gather(client.user_get(user.name), client.role_get(user.name))
    return roles is not None and user.name in roles and perms == wanted_perms(user)


async def rbac_in_place(client: EtcdClient, desired: Desired) -> bool:
    """True when root, every desired user and auth are as they should be.

    The checks are independent reads, asked concurrently: this runs on every
    deep observation.
    """

    async def root_ok() -> bool:
        roles = await client.user_get(ROOT)
        return roles is not None and ROOT in roles

    async def no_strays() -> bool:
        if not desired.prune_users:
            return True
        managed = {ROOT} | {u.name for u in desired.users}
        return not set(await client.user_list()) - managed

    async def auth_on() -> bool:
        return await client.auth_enabled() is not False

    checks = [auth_on(), root_ok(), no_strays(), *(user_in_place(client, u) for u in desired.users)]
    return all(await asyncio.gather(*checks))


async def ensure_user(client: EtcdClient, user: DesiredUser) -> list[str]:
    """Create or repair one user and its role; return what changed."""
    changes: list[str] = []
    if await client.role_get(user.name) is None:
        await client.role_add(user.name)
        changes.append(f"role-add {user.name}")
    want = wanted_perms(user)
    have = await client.role_get(user.name) or ()
    for perm in have:
        if perm not in want:
            await client.role_revoke(user.name, perm[1], perm[2])
            changes.append(f"role-revoke {user.name}")
    if want[0] not in have:
        await client.role_grant_prefix(user.name, user.prefix.encode())
        changes.append(f"role-grant {user.name} {user.prefix}")
    roles = await client.user_get(user.name)
    if roles is None:
        await client.user_add(user.name)
        changes.append(f"user-add {user.name}")
        roles = ()
    if user.name not in roles:
        await client.user_grant_role(user.name, user.name)
        changes.append(f"grant-role {user.name}")
    return changes


async def remove_user(client: EtcdClient, name: str) -> list[str]:
    changes = []
    if await client.user_get(name) is not None:
        await client.user_delete(name)
        changes.append(f"user-delete {name}")
    if await client.role_get(name) is not None:
        await client.role_delete(name)
        changes.append(f"role-delete {name}")
    return changes


async def ensure_rbac(client: EtcdClient, desired: Desired) -> list[str]:
    """Converge root, desired users (and pruning), then enable auth last."""
    changes: list[str] = []
    if await client.role_get(ROOT) is None:
        await client.role_add(ROOT)
        changes.append("role-add root")
    roles = await client.user_get(ROOT)
    if roles is None:
        await client.user_add(ROOT)
        changes.append("user-add root")
        roles = ()
    if ROOT not in roles:
        await client.user_grant_role(ROOT, ROOT)
        changes.append("grant-role root")
    for user in desired.users:
        changes += await ensure_user(client, user)
    if desired.prune_users:
        managed = {ROOT} | {u.name for u in desired.users}
        for name in sorted(set(await client.user_list()) - managed):
            changes += await remove_user(client, name)
    if await client.auth_enabled() is not True:
        await client.auth_enable()
        changes.append("auth-enable")
    return changes

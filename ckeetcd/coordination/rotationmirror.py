"""The CA rotation's record mirrored in etcd, for every daemon of the cluster.

`ckeetcd ca rotate` writes the record (ckeetcd.pki.rotationfiles: the role, both
CAs' fingerprints and *public* certificates, the grace, done) to etcd under
`/ckeetcd/rotation/<role>` (root only, as every /ckeetcd/ key) and to its own pki
dir. Each daemon, every cycle, brings the two copies together
(ckeetcd.core.rotationsync.reconcile): a follower takes etcd's copy into its file,
so it shows the stages in `status` and `plan` and builds the trust bundles for the
members it restarts; the leader publishes each step it took (a compare-and-swap on
the key's revision: a deposed leader's stale copy changes nothing). A new leader
thus continues where the old one stopped.

The NEXT CA's private key never goes to etcd. It is made in the pki dir of the
leader that took the new-ca step (`next-<role>/`); a daemon without it follows but
holds every step (ckeetcd.core.carotation.key_missing says what to copy). Once the
record says done, each follower makes its own CA files the new CA's
(ckeetcd.pki.rotationfiles.follow_finish).

During a client rotation every daemon publishes its root client certificate in its
presence key (ckeetcd.coordination.presence), and the leader waits until each
running daemon's comes from the new CA (`daemon_certs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ckeetcd.core.carotation import CLIENT, ROLES, DaemonCert
from ckeetcd.core.rotationsync import Sync, reconcile
from ckeetcd.etcd import EtcdError
from ckeetcd.pki.rotationfiles import (
    Rotation,
    RotationError,
    decode_rotation,
    encode_rotation,
    follow_finish,
    new_ca_here,
    read_rotation,
    signer_of,
    write_rotation,
)

PREFIX = b"/ckeetcd/rotation/"


def key_of(role: str) -> bytes:
    return PREFIX + role.encode()


async def read_mirror(client: Any) -> dict[str, tuple[Rotation | None, int]]:
    """etcd's copy of each role's record and its mod_revision (None, 0: none; an
    unreadable value counts as none, and is replaced by the next publish)."""
    out: dict[str, tuple[Rotation | None, int]] = {role: (None, 0) for role in ROLES}
    for kv in await client.get_prefix(PREFIX):
        role = kv.key[len(PREFIX):].decode(errors="replace")
        if role not in ROLES:
            continue
        try:
            out[role] = (decode_rotation(kv.value, role, f"etcd {kv.key.decode()}"),
                         kv.mod_revision)
        except RotationError:
            out[role] = (None, kv.mod_revision)
    return out


class RotationMirror:
    """One daemon's side of the mirror: sync each cycle, log what changed once."""

    def __init__(self, pki_dir: Path, daemon: str, log: Any) -> None:
        self.pki_dir = pki_dir
        self.daemon = daemon
        self.log = log
        self._warned: set[tuple[str, str, str]] = set()

    async def sync(self, client: Any, may_publish: bool) -> bool:
        """Bring the file and etcd copies together; whether this host's file changed."""
        changed = False
        try:
            remote = await read_mirror(client)
        except EtcdError as e:
            self._once("read", "", "warning", "ca_rotation_mirror_failed",
                       error=f"{e.code}: {e.details}")
            return False
        for role in ROLES:
            try:
                local = read_rotation(self.pki_dir, role)
            except RotationError as e:  # `ckeetcd status` names it; never overwritten here
                self._once("unreadable", role, "error", "ca_rotation_mirror_failed",
                           role=role, error=str(e))
                continue
            theirs, revision = remote[role]
            what = reconcile(local.record if local else None,
                             theirs.record if theirs else None)
            if what == Sync.TAKE and theirs is not None:
                write_rotation(self.pki_dir, theirs)
                changed = True
                self.log.info("ca_rotation_record_synced", role=role, direction="from-etcd",
                              daemon=self.daemon, new=theirs.record.new or None,
                              done=theirs.record.done)
            elif what == Sync.PUBLISH and local is not None and may_publish:
                try:
                    put = await client.put_if(key_of(role), encode_rotation(local), revision)
                except EtcdError as e:
                    self._once("publish", role, "warning", "ca_rotation_mirror_failed",
                               role=role, error=f"{e.code}: {e.details}")
                    continue
                if put:
                    self.log.info("ca_rotation_record_synced", role=role, direction="to-etcd",
                                  daemon=self.daemon, new=local.record.new or None,
                                  done=local.record.done)
        return changed

    def follow(self, may_act: bool) -> bool:
        """A finished rotation reaches this host's CA files; a leader that lacks a new CA's
        key says so (once). Whether a CA file changed."""
        changed = False
        for role in ROLES:
            try:
                rotation = read_rotation(self.pki_dir, role)
            except RotationError:
                continue
            if rotation is None or not rotation.record.new:
                continue
            r = rotation.record
            if r.done:
                how = follow_finish(self.pki_dir, rotation)
                if how in ("key", "certificate"):
                    changed = True
                    self.log.info("ca_rotation_followed", role=role, new=r.new, how=how,
                                  daemon=self.daemon)
                elif how == "key-missing":
                    self._key_missing(rotation, "warning")
            elif may_act and not new_ca_here(self.pki_dir, rotation, key=True):
                self._key_missing(rotation, "warning")
        return changed

    def _key_missing(self, rotation: Rotation, level: str) -> None:
        from ckeetcd.core.carotation import key_missing

        r = rotation.record
        self._once("key", f"{r.role}:{r.new}:{r.done}", level, "ca_rotation_key_missing",
                   role=r.role, new=r.new, done=r.done, daemon=self.daemon,
                   pki_dir=str(self.pki_dir), hint=key_missing(r.role))

    def _once(self, kind: str, what: str, level: str, event: str, **fields: Any) -> None:
        key = (kind, what, str(sorted(fields.items())) if kind != "key" else "")
        if key in self._warned:
            return
        self._warned.add(key)
        getattr(self.log, level)(event, **fields)


def daemon_certs(rotation: Rotation | None, me: str, own_pem: bytes | None,
                 others: dict[str, bytes | None] | None) -> tuple[DaemonCert, ...]:
    """Each running daemon's root certificate as a client rotation sees it: this one,
    and the others' from their presence keys (None: not read yet in this term, so
    the rotation waits rather than miss one)."""
    if rotation is None or rotation.record.role != CLIENT:
        return ()
    out = [DaemonCert(me, signer_of(own_pem, rotation), me=True)]
    if others is None:
        out.append(DaemonCert("(the other daemons: not read yet)", ""))
        return tuple(out)
    out += [DaemonCert(d, signer_of(pem, rotation)) for d, pem in sorted(others.items())]
    return tuple(out)


async def publish_start(client: Any, rotation: Rotation) -> str:
    """Put a new rotation's record into etcd unless another is under way there (that
    one's role, or "" when put). A record another host started meanwhile wins."""
    mirror = await read_mirror(client)
    busy = [r.record.role for r, _ in mirror.values() if r is not None and not r.record.done]
    if busy:
        return busy[0]
    _, revision = mirror[rotation.record.role]
    if not await client.put_if(key_of(rotation.record.role), encode_rotation(rotation),
                               revision):
        return rotation.record.role
    return ""


def follow_client_bundle(pool: Any, pki_dir: Path, signer_new: bool) -> None:
    """Once the client rotation signs with the new CA (every member trusts it), server
    certificates come from either CA: every daemon verifies them with the old + new
    bundle (as the leader's ops do: ckeetcd.ops.tls.use_client_bundle), and with ca.crt
    again once the bundle is gone."""
    import dataclasses

    from ckeetcd.pki.rotationfiles import server_trust_file, write_client_bundle

    try:
        rotation = read_rotation(pki_dir, CLIENT)
    except RotationError:
        return
    if signer_new and rotation is not None and not rotation.record.done and rotation.new_pem:
        write_client_bundle(pki_dir, rotation)
    want = server_trust_file(pki_dir)
    if pool.tls.ca != want:
        pool.tls = dataclasses.replace(pool.tls, ca=want)
        pool.rotate()

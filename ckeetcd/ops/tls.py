"""Member certificates on the node: issued by the CA, re-issued when wrong or expiring.

During a CA rotation (ckeetcd.core.carotation) the certificates of the role (peer
certificates, or server certificates for the client CA) are signed by the new CA
once every member trusts it, and each member (re)started names the trust bundle
the rotation wants now, installed beside its certificates. From that moment of a
client rotation the daemon verifies servers with the old + new bundle
(`client-bundle.crt`), since their certificates come from either CA.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from ckeetcd.core.carotation import CLIENT, PEER, Facts, key_missing, wanted_trust
from ckeetcd.core.rotationplan import role_facts, signer_new, trust_name
from ckeetcd.ops.context import OpContext, OpFailed
from ckeetcd.pki import CA, PEER_CA_CERT, load_ca, member_tls_files, member_tls_problem
from ckeetcd.pki.rotationfiles import (
    Rotation,
    ca_pem_for,
    cert_fingerprint,
    load_next,
    peer_pem_for,
    read_rotation,
    server_trust_file,
    write_client_bundle,
)

# the keys too: a set a killed daemon left half-written must not pass as fine
TLS_CHECKED = ("ca.crt", "server.crt", "peer.crt", "server.key", "peer.key")


def _facts(ctx: OpContext, role: str) -> Facts | None:
    return role_facts(role, ctx.desired, ctx.observed)


def peer_trust(ctx: OpContext) -> str:
    """The tls file --peer-trusted-ca-file names (ckeetcd.nodes.base.MemberSpec)."""
    return trust_name(PEER, _facts(ctx, PEER), ctx.peer is not ctx.ca)


def client_trust(ctx: OpContext) -> str:
    """The tls file --trusted-ca-file names."""
    return trust_name(CLIENT, _facts(ctx, CLIENT), True)


def peer_signer(ctx: OpContext) -> CA:
    """The CA that signs peer certificates now: the new one of a peer rotation once every
    member trusts it, the finished rotation's CA in place, else the daemon's peer CA."""
    rotation = read_rotation(ctx.config.cluster.pki_dir, PEER)
    if rotation is None:
        return ctx.peer
    if rotation.record.done:
        return _rotated(ctx, rotation)
    if signer_new(_facts(ctx, PEER)):
        new = load_next(ctx.config.cluster.pki_dir, rotation)
        if new is None:
            raise OpFailed(key_missing(PEER))
        return new
    return ctx.peer


def _rotated(ctx: OpContext, rotation: Rotation) -> CA:
    """The CA of a finished rotation, as this host's files hold it; OpFailed when they
    still hold the old one (the finish ran elsewhere and the new CA's key is not here):
    a certificate of the old CA would be refused by every member now."""
    role = rotation.record.role
    ca = load_ca(ctx.config.cluster.pki_dir, role)
    if cert_fingerprint(ca.cert_pem) != rotation.record.new:
        raise OpFailed(key_missing(role))
    return ca


def signer_pem(ctx: OpContext, role: str) -> bytes:
    """The certificate of the CA that signs the role's member certificates now (what
    they are checked against): public, so a daemon without the new CA's key still
    checks, and only a re-issue needs the key."""
    pki = ctx.config.cluster.pki_dir
    rotation = read_rotation(pki, role)
    current = (ctx.peer if role == PEER else ctx.ca).cert_pem
    if rotation is None:
        return current
    if rotation.record.done or signer_new(_facts(ctx, role)):
        return rotation.new_pem or current
    return current


def client_signer(ctx: OpContext) -> CA:
    """The CA that signs the members' server certificates now: the new one of a client
    rotation once every member trusts it (the daemon then verifies servers with the
    bundle: `use_client_bundle`), the finished rotation's CA in place, else the
    daemon's client CA."""
    pki = ctx.config.cluster.pki_dir
    rotation = read_rotation(pki, CLIENT)
    if rotation is None:
        return ctx.ca
    if rotation.record.done:
        return _rotated(ctx, rotation)
    if signer_new(_facts(ctx, CLIENT)):
        new = load_next(pki, rotation)
        if new is None:
            raise OpFailed(key_missing(CLIENT))
        use_client_bundle(ctx, rotation)
        return new
    return ctx.ca


def use_client_bundle(ctx: OpContext, rotation: Rotation | None) -> None:
    """Write the old + new client CA bundle (once) and verify servers with whichever
    file is in force now (the bundle, or ca.crt after the finish): new channels."""
    pki = ctx.config.cluster.pki_dir
    if rotation is not None and not rotation.record.done:
        write_client_bundle(pki, rotation)
    want = server_trust_file(pki)
    if ctx.pool.tls.ca != want:
        ctx.pool.tls = dataclasses.replace(ctx.pool.tls, ca=want)
        ctx.pool.rotate()


async def install_trust(ctx: OpContext, name: str) -> None:
    """Write the trust bundles a start of `name` names, when a rotation asks for one."""
    files = {}
    for role in (PEER, CLIENT):
        rotation = read_rotation(ctx.config.cluster.pki_dir, role)
        f = _facts(ctx, role)
        if rotation is None or f is None:
            continue
        bundle = rotation.bundle(wanted_trust(f))
        fname = trust_name(role, f, True)
        if await ctx.runtime.read_tls(name, fname) != bundle:
            files[fname] = bundle
    if files:
        await ctx.runtime.install_tls(name, files)


async def member_tls_state(ctx: OpContext, name: str) -> str:
    """Why `name`'s certificates must be re-issued ("" when they are fine)."""
    d = ctx.desired.by_name(name)
    if d is None:
        return ""
    rotation = read_rotation(ctx.config.cluster.pki_dir, PEER)
    separate = ctx.peer is not ctx.ca or rotation is not None
    names = TLS_CHECKED + ((PEER_CA_CERT,) if separate else ())
    files = {f: await ctx.runtime.read_tls(name, f) for f in names}
    current = signer_pem(ctx, PEER) if separate else None
    ca_pem = ca_pem_for(files["server.crt"], read_rotation(ctx.config.cluster.pki_dir, CLIENT),
                        signer_pem(ctx, CLIENT))
    return member_tls_problem(files, ca_pem, d.address, ctx.desired.member_dns,
                              ctx.config.tls.member_cert_renew_before,
                              dt.datetime.now(dt.timezone.utc),
                              peer_ca_pem=peer_pem_for(files["peer.crt"], rotation, current))


async def ensure_member_tls(ctx: OpContext, name: str, force: bool = False) -> bool:
    """Install fresh certs when missing, wrong or expiring (or when forced)."""
    d = ctx.desired.by_name(name)
    if d is None:
        if await ctx.runtime.read_tls(name, "server.crt") is None:
            raise OpFailed(f"{name} is not a desired member and has no certificates")
        return False  # a leaving member restarted for quorum keeps what it has
    await install_trust(ctx, name)
    if not force and not await member_tls_state(ctx, name):
        return False
    files = member_tls_files(client_signer(ctx), name, d.address,
                             ctx.config.tls.member_cert_lifetime, ctx.desired.member_dns,
                             peer_ca=peer_signer(ctx))
    await ctx.runtime.install_tls(name, files)
    return True

"""The rotation record's mirror in etcd (real etcd, two daemon hosts' pki dirs): a
rotation started on one host is followed from etcd by the other, each step the leader
takes is published, a stale copy never overwrites a newer one (compare-and-swap), a
second rotation is refused while one is recorded, only public certificates reach
etcd, a daemon without the new CA's key says what to copy, and every daemon's root
certificate is in its presence key for the client rotation to wait on."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, MutableMapping
from dataclasses import replace
from typing import Any

import structlog

from ckeetcd.coordination.presence import Presence
from ckeetcd.coordination.rotationmirror import (
    RotationMirror,
    daemon_certs,
    key_of,
    publish_start,
    read_mirror,
)
from ckeetcd.core.carotation import CLIENT, PEER
from ckeetcd.etcd import ClientPool
from ckeetcd.pki.rotationfiles import (
    make_next,
    new_rotation,
    read_rotation,
    write_rotation,
)
from ckeetcd.tasks.daemoncert import daemon_tls
from tests.harness import Cluster


def test_the_record_goes_through_etcd_and_never_backwards(
        make_cluster: Callable[..., Cluster], logs: list[MutableMapping[str, Any]]) -> None:
    c = make_cluster(["m1"])
    c.start_daemon()
    c.wait_healthy(["m1"])
    c.stop_daemon()  # the mirror's two sides are driven by hand here
    a = c.state_dir / "pki"
    b = c.root / "other-host" / "pki"
    shutil.copytree(a, b)  # a second daemon host with the CA keys (`ca import`)
    log = structlog.get_logger()
    here, there = RotationMirror(a, "a", log), RotationMirror(b, "b", log)
    url = c.client_url("m1")

    async def go() -> None:
        pool = ClientPool(daemon_tls(c.config), 2.0)
        client = pool.get(url)
        try:
            started = new_rotation(PEER, (a / "peer-ca.crt").read_bytes(), False)
            assert await publish_start(client, started) == ""
            write_rotation(a, started)
            again = new_rotation(CLIENT, (b / "ca.crt").read_bytes(), False)
            assert await publish_start(client, again) == PEER  # one rotation at a time

            # the other host follows from etcd, as a follower (it publishes nothing)
            assert await there.sync(client, may_publish=False) is True
            assert read_rotation(b, PEER) == started

            # the leader makes the new CA; its next sync publishes the step
            _, named = make_next(a, "test", started)
            assert await here.sync(client, may_publish=False) is False  # a follower: no
            assert (await read_mirror(client))[PEER][0] == started
            assert await here.sync(client, may_publish=True) is False
            mirrored, revision = (await read_mirror(client))[PEER]
            assert mirrored == named
            raw = (await client.get(key_of(PEER))).value
            assert b"PRIVATE KEY" not in raw and b"BEGIN CERTIFICATE" in raw

            # b has an older copy: it takes etcd's, never publishes its own over it
            assert await there.sync(client, may_publish=True) is True
            assert read_rotation(b, PEER) == named
            # a writer that read a stale revision changes nothing (a deposed leader)
            later = replace(named, record=replace(named.record, grace_until=5.0))
            assert await client.put_if(key_of(PEER), b"{}", revision - 1) is False
            assert await client.put_if(key_of(PEER), b"{}", revision) is True
            write_rotation(a, later)  # a's step; the garbage in etcd is replaced by it
            assert await here.sync(client, may_publish=True) is False
            assert (await read_mirror(client))[PEER][0] == later

            # b leads now, without the new CA's key: it says what to copy, once
            there.follow(may_act=True)
            there.follow(may_act=True)
            held = [e for e in logs if e["event"] == "ca_rotation_key_missing"]
            assert len(held) == 1 and held[0]["role"] == PEER
            assert "ckeetcd ca export" in held[0]["hint"]

            # presence carries each daemon's root certificate; the leader reads them
            own = daemon_tls(c.config).cert.read_bytes()
            p1, p2 = Presence("d1", log), Presence("d2", log)
            await p2.refresh(client, 3, (), False, own)
            await p1.refresh(client, 3, (), True, own)
            assert p1.certs == {"d2": own}
            rotation = new_rotation(CLIENT, (a / "ca.crt").read_bytes(), False)
            certs = daemon_certs(rotation, "d1", own, p1.certs)
            assert [(d.daemon, d.cert_from == rotation.record.old, d.me) for d in certs] == [
                ("d1", True, True), ("d2", True, False)]
            # before the others are read in a term, the rotation waits on them
            assert [d.cert_from for d in daemon_certs(rotation, "d1", own, None)][1:] == [""]
            for p in (p1, p2):
                await p.withdraw(client)
        finally:
            await pool.close()

    asyncio.run(go())
    synced = [(e["daemon"], e["direction"]) for e in logs
              if e["event"] == "ca_rotation_record_synced"]
    assert synced == [("b", "from-etcd"), ("a", "to-etcd"), ("b", "from-etcd"),
                      ("a", "to-etcd")]

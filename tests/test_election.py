"""Leader election on a real cluster: one winner, a deposed leader's fence fails."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from ckeetcd.coordination.election import LEADER_KEY, Leadership, NotLeader
from ckeetcd.core.model import Decision, Op
from ckeetcd.etcd import ClientPool
from ckeetcd.etcd import lease as leases
from ckeetcd.tasks.daemoncert import daemon_tls
from tests.harness import Cluster, ListLog


def test_one_leader_and_a_deposed_leader_cannot_act(cluster: Cluster) -> None:
    base = cluster.config
    _, observed = cluster.observe()
    decision = Decision("member-add", (Op("add-member", member="x"),
                                       Op("publish-endpoints", endpoints=("u",))))

    async def go() -> None:
        pool = ClientPool(daemon_tls(base), 2.0)
        made = []
        for name in ("a", "b"):
            cfg = dataclasses.replace(base, daemon=dataclasses.replace(
                base.daemon, election=True, id=name, lease_ttl=2))
            made.append(Leadership(cfg, pool, ListLog()))
        a, b = made
        try:
            for x in (a, b):
                x.filter(observed, decision)  # learns endpoints and that quorum holds
            await a._campaign()
            await b._campaign()
            assert a.leading() and not b.leading()
            assert b.holder == "a"
            url = observed.healthy_voters()[0].client_urls[0]
            for x in (b, a):  # what each run loop does next: publish, and (a) read
                await x.presence.refresh(pool.get(url), 3, x.membership, x.leading())
            assert a.presence.peers == {"b": b.membership}
            # roles: the follower keeps only node-local ops
            assert a.filter(observed, decision) == decision and a.role == "leader"
            assert [op.kind for op in b.filter(observed, decision).ops] == ["publish-endpoints"]
            await a.fence(decision.ops[0])  # passes
            with pytest.raises(NotLeader):
                await b.fence(decision.ops[0])
            await b.fence(decision.ops[1])  # node-local: never fenced
            # a's lease ends behind its back (as after a long pause): b takes over
            client = pool.get(observed.healthy_voters()[0].client_urls[0])
            held = await leases.current(client, LEADER_KEY)
            assert held is not None
            await leases.revoke(client, held.lease)
            await b._campaign()
            assert b.leading() and b.term > a.term
            with pytest.raises(NotLeader):
                await a.fence(decision.ops[0])  # the fence Txn sees the new term
            assert not a.leading()
            assert "leadership_lost" in a.log.names()
            await b.resign()  # a clean stop hands over at once
            assert await leases.current(client, LEADER_KEY) is None
        finally:
            await pool.close()

    asyncio.run(go())

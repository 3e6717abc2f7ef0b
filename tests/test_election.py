"""Leader election on a real cluster: one winner, a deposed leader's fence fails."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog

from ckeetcd.coordination.election import LEADER_KEY, Leadership, NotLeader
from ckeetcd.core.kinds import OpKind, Phase
from ckeetcd.core.model import AddMember, Decision, Desired, ServersFile
from ckeetcd.core.planner import for_role, membership, role_of
from ckeetcd.etcd import ClientPool
from ckeetcd.etcd import lease as leases
from ckeetcd.tasks.daemoncert import daemon_tls
from tests.harness import Cluster


def test_one_leader_and_a_deposed_leader_cannot_act(
        cluster: Cluster, logs: list[MutableMapping[str, Any]]) -> None:
    base = cluster.config
    desired = Desired.from_config(base)
    _, observed = cluster.observe()
    decision = Decision(Phase.MEMBER_ADD, (
        AddMember(member="x"), ServersFile(kind=OpKind.PUBLISH_ENDPOINTS, endpoints=("u",))))

    async def go() -> None:
        pool = ClientPool(daemon_tls(base), 2.0)
        made = []
        late = {"a": 0.0, "b": 0.0}  # seconds each daemon's clock is ahead
        for name in ("a", "b"):
            cfg = dataclasses.replace(base, daemon=dataclasses.replace(
                base.daemon, election=True, id=name, lease_ttl=2))
            made.append(Leadership(cfg, pool, structlog.get_logger().bind(daemon=name),
                                   clock=lambda n=name: time.monotonic() + late[n]))
        a, b = made
        try:
            for x in (a, b):  # learns endpoints and that quorum holds
                x.see(observed, role_of(x.standing(), observed))
            await a._campaign()
            await b._campaign()
            assert a.leading() and not b.leading()
            assert b.holder == "a"
            url = observed.healthy_voters()[0].client_urls[0]
            for x in (b, a):  # what each run loop does next: publish, and (a) read
                await x.presence.refresh(pool.get(url), 3, x.membership, x.leading())
            assert a.presence.peers == {"b": b.membership}
            # roles: the follower keeps only node-local ops
            for x in (a, b):
                x.see(observed, role_of(x.standing(), observed))
            mine = membership(desired)
            led = for_role(decision, a.role, a.standing(), observed, mine)
            assert led == dataclasses.replace(decision, role="leader") and a.role == "leader"
            followed = for_role(decision, b.role, b.standing(), observed, mine)
            assert [op.kind for op in followed.ops] == ["publish-endpoints"]
            await a.fence(decision.ops[0])  # passes
            # a's background keepalive fell behind (a busy machine): by its own clock the
            # lease may end within the step; the fence renews it instead of failing
            late["a"] = a._expires - time.monotonic() - a.rpc_timeout / 2
            assert not a.leading()
            await a.fence(decision.ops[0])
            assert a.leading()
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
            assert "leadership_lost" in [e["event"] for e in logs if e.get("daemon") == "a"]
            await b.resign()  # a clean stop hands over at once
            assert await leases.current(client, LEADER_KEY) is None
        finally:
            await pool.close()

    asyncio.run(go())

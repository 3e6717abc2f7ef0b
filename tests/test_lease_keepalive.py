"""A lease keepalive ends as an EtcdError or a TTL, never as a raw gRPC exception.

The lab soak's bootstrap logged `side_task_failed` (error) for the election
task: `ExecuteBatchError: Failed "execute_batch": (SendCloseFromClientOperation)`.
The keepalive read its answer, then half-closed the stream (`done_writing`);
when the call had ended in between (its deadline, the server closing it),
grpc.aio raised its internal ExecuteBatchError, which no caller expects.
"""

from __future__ import annotations

import asyncio

from ckeetcd.etcd import lease as leases
from ckeetcd.etcd.client import EtcdError
from tests.harness import Cluster


def test_keepalive_against_its_own_deadline_fails_only_as_etcd_error(cluster: Cluster) -> None:
    async def go() -> tuple[dict[str, int], int]:
        kinds: dict[str, int] = {}
        ok = 0
        async with cluster.client("m1") as client:
            lease, _ = await leases.grant(client, 60)
            # deadlines around the keepalive's own round trip: some end before the answer,
            # some between the answer and the half-close, most after
            for i in range(1200):
                try:
                    await leases.keepalive(client, lease, timeout=0.0002 * (i % 60 + 1))
                    ok += 1
                except EtcdError:
                    kinds["EtcdError"] = kinds.get("EtcdError", 0) + 1
                except Exception as e:
                    kinds[type(e).__name__] = kinds.get(type(e).__name__, 0) + 1
        return kinds, ok

    kinds, ok = asyncio.run(go())
    assert set(kinds) <= {"EtcdError"}, kinds
    assert ok > 0

"""A timeout during a raft election is explained, not left as a bare DEADLINE_EXCEEDED."""

from __future__ import annotations

import dataclasses
from collections.abc import MutableMapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import structlog

from ckeetcd.core.electionhint import election_hint
from ckeetcd.core.kinds import Phase
from ckeetcd.core.model import (
    AddMember,
    Decision,
    Observed,
    Op,
    RemoveMember,
    StopMember,
)
from ckeetcd.etcd.client import EtcdError
from ckeetcd.loop.runner import run_ops
from ckeetcd.ops import OPS, OpContext
from ckeetcd.support.history import History
from tests.builders import cluster, mid
from tests.harness import named


def no_leader(obs: Observed) -> Observed:
    return dataclasses.replace(obs, health=MappingProxyType(
        {k: dataclasses.replace(h, leader_id=0) for k, h in obs.health.items()}))


def split_leader(obs: Observed) -> Observed:
    health = dict(obs.health)
    health[mid("m3")] = dataclasses.replace(health[mid("m3")], leader_id=mid("m2"))
    return dataclasses.replace(obs, health=MappingProxyType(health))


STOP_M1 = StopMember(member="m1", member_id=mid("m1"))
STOP_M3 = StopMember(member="m3", member_id=mid("m3"))
REMOVE_M1 = RemoveMember(member="m1", member_id=mid("m1"))
REMOVE_M3 = RemoveMember(member="m3", member_id=mid("m3"))
ADD = AddMember(member="m4")


@pytest.mark.parametrize(("name", "observed", "ops", "failed", "code", "says"), [
    # m1 is the leader in the builders' clusters
    ("leader stopped by this plan", cluster(voters=["m1", "m2", "m3"]),
     (STOP_M1, REMOVE_M1), 1, "DEADLINE_EXCEEDED", "took down the raft leader m1"),
    ("leader removed", cluster(voters=["m1", "m2", "m3"]), (REMOVE_M1,), 0, "UNAVAILABLE",
     "took down the raft leader m1"),
    ("a follower stopped: no election", cluster(voters=["m1", "m2", "m3"]),
     (STOP_M3, REMOVE_M3), 1, "DEADLINE_EXCEEDED", ""),
    ("no leader seen", no_leader(cluster(voters=["m1", "m2", "m3"])), (REMOVE_M3,), 0,
     "DEADLINE_EXCEEDED", "no healthy member reported a raft leader"),
    ("members disagree", split_leader(cluster(voters=["m1", "m2", "m3"])), (ADD,), 0,
     "DEADLINE_EXCEEDED", "disagreed on the raft leader"),
    ("not a timeout", cluster(voters=["m1", "m2", "m3"]), (STOP_M1, REMOVE_M1), 1,
     "PERMISSION_DENIED", ""),
    ("no member list", Observed(members=None), (ADD,), 0, "DEADLINE_EXCEEDED", ""),
])
def test_election_hint(name: str, observed: Observed, ops: tuple[Op, ...], failed: int,
                       code: str, says: str) -> None:
    hint = election_hint(observed, ops, failed, code)
    if says:
        assert says in hint and "election was in progress" in hint, (name, hint)
    else:
        assert hint == "", (name, hint)


async def test_the_runner_logs_and_records_the_hint(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     logs: list[MutableMapping[str, Any]]) -> None:
    """What the operator reads: the op's warning and its history record carry the hint."""
    async def times_out(ctx: OpContext, op: Op) -> None:
        raise EtcdError("https://10.0.0.2:2379", "DEADLINE_EXCEEDED", "context deadline exceeded")

    async def stops(ctx: OpContext, op: Op) -> None:
        return None

    monkeypatch.setitem(OPS, "stop-member", stops)
    monkeypatch.setitem(OPS, "remove-member", times_out)
    history = History(tmp_path)
    ctx = OpContext(config=None, desired=None, observed=cluster(voters=["m1", "m2", "m3"]),  # type: ignore[arg-type]
                    runtime=None, pool=None, ca=None, history=history, log=structlog.get_logger())  # type: ignore[arg-type]
    ok = await run_ops(ctx, Decision(Phase.MEMBER_REMOVE, (STOP_M1, REMOVE_M1)))
    assert ok is False
    failed = [e for e in named(logs, "op") if e["outcome"] == "error"]
    assert failed and "took down the raft leader m1" in failed[0]["hint"]
    assert "DEADLINE_EXCEEDED" in failed[0]["error"]
    ends = [r for r in history.read() if r["event"] == "op-end" and r["outcome"] == "error"]
    assert ends and ends[0]["hint"] == failed[0]["hint"]

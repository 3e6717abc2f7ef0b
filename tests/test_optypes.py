"""Typed ops and phases: one type and one runner per op kind, names byte-identical."""

from __future__ import annotations

import asyncio
import json

import pytest

from ckeetcd.core.kinds import MEMBERSHIP_OPS, NODE_LOCAL_OPS, OpKind, Phase, Reason
from ckeetcd.core.model import (
    OP_TYPES,
    DefragMember,
    DisarmAlarm,
    Op,
    RenewCerts,
    ServersFile,
    StartMember,
    StopMember,
)
from ckeetcd.ops import OPS
from ckeetcd.tasks.metrics import PHASES

# What the logs, the history, `ckeetcd plan` and the metrics said before the enums
# (CONTRACT.md names the replacement ops; the rest are documented in the guide).
OP_NAMES = {"start-member", "restart-member", "stop-member", "remove-member", "add-member",
            "promote-member", "ensure-rbac", "renew-member-certs", "stop-apiserver-traffic",
            "publish-endpoints", "compact", "defrag-member", "disarm-alarm", "move-leader",
            "rotate-ca"}
PHASE_NAMES = {"bootstrap", "repair", "certs", "no-quorum", "rbac", "member-add", "promote",
               "member-remove", "publish", "degraded", "steady", "nospace", "defrag",
               "corrupt", "paused", "restoring", "config-drift", "backoff", "refused",
               "rolling", "upgrade-refused", "ca-rotation"}


def test_every_name_is_the_string_it_always_was() -> None:
    assert {str(k) for k in OpKind} == OP_NAMES
    assert {str(p) for p in Phase} == PHASE_NAMES
    for k in OpKind:  # f-strings, str(), joins, JSON and dict keys see the plain name
        assert f"{k}" == k.value == str(k) and "-".join([k]) == k.value
        assert json.dumps({"op": k}) == json.dumps({"op": k.value})
        assert {k.value: 1}[k] == 1
    assert set(PHASES) == set(Phase), "every phase has its metric label from the start"


def test_every_kind_has_one_op_type_and_one_runner() -> None:
    assert OP_TYPES.keys() == set(OpKind)
    assert OPS.keys() == set(OpKind)
    for kind, cls in OP_TYPES.items():
        assert kind in cls.KINDS
    assert set(OpKind) >= NODE_LOCAL_OPS | MEMBERSHIP_OPS


@pytest.mark.parametrize("build", [
    lambda: Op(kind=OpKind.ADD_MEMBER, member="m1"),  # the base carries no kind
    lambda: StopMember(kind=OpKind.REMOVE_MEMBER, member="m1"),
    lambda: StartMember(kind=OpKind.STOP_MEMBER, member="m1"),
    lambda: ServersFile(kind=OpKind.COMPACT, endpoints=("u",)),
])
def test_an_op_is_built_only_with_the_type_of_its_kind(build: object) -> None:
    with pytest.raises(TypeError, match="cannot carry op"):
        build()  # type: ignore[operator]


def test_named_fields_replace_the_overloaded_detail() -> None:
    assert StopMember(member="m1", archive_data=True).archive_data
    assert DefragMember(member="m1", reason=Reason.NOSPACE).reason == "nospace"
    assert DisarmAlarm().alarm == "NOSPACE"
    assert RenewCerts(member="m1", problem="expires in 10s").problem == "expires in 10s"
    assert not hasattr(StopMember(member="m1"), "detail")
    assert ServersFile(kind=OpKind.PUBLISH_ENDPOINTS, endpoints=("a", "b")).targets() == "a,b"
    assert StopMember(member="m1").targets() == "m1"


def test_a_runner_refuses_an_op_of_another_type() -> None:
    wrong = StopMember(member="m1")
    with pytest.raises(TypeError, match="expected a RemoveMember"):
        asyncio.run(OPS[OpKind.REMOVE_MEMBER](None, wrong))  # type: ignore[arg-type]

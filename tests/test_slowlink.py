"""The slow-link fault's pure parts (tests/slowlink.py, tests/soak/labsoak.py): the tc
commands, the random-drop program, ping's summary. The link itself is exercised for real
in tests/test_partition.py, where ping across it must show delay and loss."""

from __future__ import annotations

import pytest

from tests.slowlink import (
    TC_ACT_SHOT,
    PingResult,
    Shape,
    heal_commands,
    loss_bytecode,
    parse_ping,
    slow_commands,
)
from tests.soak.labsoak import own_node


@pytest.mark.parametrize(("loss", "threshold"), [
    (0.03, 128849019),      # 3 % of 2**32
    (0.5, 2**31),
    (0.999999999999, 2**32 - 1),  # never past the u32
])
def test_the_drop_program_drops_randoms_at_or_below_the_share(loss: float,
                                                              threshold: int) -> None:
    ops = loss_bytecode(loss).split(",")
    assert ops[0] == "4"  # four instructions follow
    assert ops[1] == "32 0 0 4294963256"  # A = a random u32 (SKF_AD_RANDOM)
    assert ops[2] == f"37 1 0 {threshold}"  # A > threshold: skip the drop
    assert ops[3] == f"6 0 0 {TC_ACT_SHOT}" and ops[4] == "6 0 0 4294967295"


def test_both_directions_are_shaped_on_the_bridge_side_and_healed() -> None:
    cmds = [" ".join(c) for c in slow_commands("vh1", "ifb-h1", Shape(200, 250, 0.03))]
    tbf = "root tbf rate 200kbit burst 3000 latency 250ms"
    assert f"tc qdisc add dev vh1 {tbf}" in cmds        # toward the host
    assert f"tc qdisc add dev ifb-h1 {tbf}" in cmds     # from the host, via the ifb
    drops = [c for c in cmds if " bpf da bytecode " in c]
    assert [c.split()[5] for c in drops] == ["egress", "ingress"]
    redirect = [i for i, c in enumerate(cmds) if "mirred egress redirect dev ifb-h1" in c]
    assert redirect and cmds.index("ip link add ifb-h1 type ifb") < redirect[0]
    heal = [" ".join(c) for c in heal_commands("vh1", "ifb-h1")]
    assert heal == ["tc qdisc del dev vh1 clsact", "tc qdisc del dev vh1 root",
                    "ip link del ifb-h1"]


def test_no_random_loss_means_no_drop_filter() -> None:
    assert not [c for c in slow_commands("vh2", "ifb-h2", Shape(200, 250, 0.0)) if "bpf" in c]


@pytest.mark.parametrize("bad", [
    {"rate_kbit": 0, "latency_ms": 250, "loss": 0.0},
    {"rate_kbit": 200, "latency_ms": 0, "loss": 0.0},
    {"rate_kbit": 200, "latency_ms": 250, "loss": 1.0},
    {"rate_kbit": 200, "latency_ms": 250, "loss": -0.1},
    {"rate_kbit": 200, "latency_ms": 250, "loss": 0.0, "burst_bytes": 1000},
])
def test_a_shape_that_cannot_be_built_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Shape(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "want"), [
    ("--- 10.213.3.11 ping statistics ---\n"
     "30 packets transmitted, 27 received, 10% packet loss, time 5810ms\n"
     "rtt min/avg/max/mdev = 101.204/230.561/498.007/80.335 ms\n",
     PingResult(30, 27, 101.204, 230.561, 498.007)),
    ("30 packets transmitted, 0 received, +3 errors, 100% packet loss, time 6000ms\n",
     PingResult(30, 0)),
])
def test_ping_summary(text: str, want: PingResult) -> None:
    got = parse_ping(text)
    assert got == want
    assert got.loss == pytest.approx(1 - want.received / want.sent)


def test_no_ping_summary_is_an_error_naming_what_ping_said() -> None:
    with pytest.raises(ValueError, match="connect: Network is unreachable"):
        parse_ping("ping: connect: Network is unreachable\n")


@pytest.mark.parametrize(("kind", "cause"), [
    ("partition-leader-node", "partition-own-node"),
    ("partition-follower-node", "partition-own-node"),
    ("slow-link-leader-node", "slow-link-own-node"),
    ("slow-link-follower-node", "slow-link-own-node"),
    ("kill-leader", "kill-leader"),
])
def test_a_fault_of_a_daemons_own_node(kind: str, cause: str) -> None:
    assert own_node(kind) == cause

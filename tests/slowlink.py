"""A slow, lossy link for a namespace-lab host, with only what this kernel has (pure).

Issue 12 asks for `tc netem` delay and loss. These machines' kernel has no
sch_netem (nor fq, fq_codel, codel, red, pie, act_police, act_gact, matchall),
but it has tbf, clsact, cls_u32, cls_bpf, act_mirred and ifb. So a slow link is
built the way a congested WAN link really behaves:

- **delay and tail loss**: a token-bucket filter (tbf) with a low `rate` and a
  queue bounded by `latency`. Once the link's own traffic (etcd's replication,
  the clients) exceeds the rate, every packet waits behind the queue, up to
  `latency`, and the packets that find it full are dropped;
- **random loss**: a classic-BPF classifier in direct-action mode that drops a
  packet when a per-packet random u32 (`ld rand`) is at or below a threshold,
  `loss` of the time, whatever the load;
- **both directions**, and neither seen by the sender as a local error: all of
  it sits on the bridge's side of the host's veth (`vhN`, in the bridge's
  namespace), like a router between the node and the rest. Toward the node:
  vhN's egress (tbf as its root qdisc, the loss filter on its clsact egress).
  From the node: vhN's ingress, first the loss filter, then redirected
  (act_mirred) to an ifb device whose root qdisc is a second tbf.

`ping` across the link measures what it really did (round-trip time, loss).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Classic BPF: ancillary load of a random u32 (SKF_AD_OFF + SKF_AD_RANDOM), and
# the tc verdicts of a direct-action classifier.
_LD_RAND = "32 0 0 4294963256"   # BPF_LD|BPF_W|BPF_ABS, k = -4096 + 56
_JGT = 37                        # BPF_JMP|BPF_JGT|BPF_K
_RET = 6                         # BPF_RET|BPF_K
TC_ACT_SHOT, TC_ACT_UNSPEC = 2, 4294967295  # drop; -1: go on to the next filter


@dataclass(frozen=True)
class Shape:
    """One direction of the slow link (both directions get the same)."""

    rate_kbit: int        # the link's rate
    latency_ms: int       # the longest a packet waits in the queue before it is dropped
    loss: float           # the share of packets dropped at random, 0 <= loss < 1
    burst_bytes: int = 3000  # the token bucket: at least one full frame (1514 bytes)

    def __post_init__(self) -> None:
        if not 0 <= self.loss < 1:
            raise ValueError(f"loss must be in [0, 1): {self.loss}")
        if self.rate_kbit <= 0 or self.latency_ms <= 0 or self.burst_bytes < 1514:
            raise ValueError(f"rate and latency must be positive, burst >= 1514: {self}")

    def describe(self) -> dict[str, object]:
        return {"rate_kbit": self.rate_kbit, "queue_latency_ms": self.latency_ms,
                "random_loss": self.loss}


def loss_bytecode(loss: float) -> str:
    """The cBPF program (tc's `bytecode` syntax) that drops `loss` of the packets."""
    threshold = min(round(loss * 2**32), 2**32 - 1)
    # A = random; if A > threshold: go on (skip one), else drop
    return f"4,{_LD_RAND},{_JGT} 1 0 {threshold},{_RET} 0 0 {TC_ACT_SHOT}," \
           f"{_RET} 0 0 {TC_ACT_UNSPEC}"


def _tbf(dev: str, s: Shape) -> list[str]:
    return ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{s.rate_kbit}kbit",
            "burst", str(s.burst_bytes), "latency", f"{s.latency_ms}ms"]


def _drop(dev: str, hook: str, s: Shape) -> list[list[str]]:
    if s.loss == 0:
        return []
    return [["tc", "filter", "add", "dev", dev, hook, "pref", "1", "protocol", "all",
             "bpf", "da", "bytecode", loss_bytecode(s.loss)]]


def slow_commands(veth: str, ifb: str, s: Shape) -> list[list[str]]:
    """The commands (run in the bridge's namespace) that make `veth`'s host slow."""
    return [
        _tbf(veth, s),                                     # toward the host
        ["tc", "qdisc", "add", "dev", veth, "clsact"],
        *_drop(veth, "egress", s),
        ["ip", "link", "add", ifb, "type", "ifb"],          # from the host
        ["ip", "link", "set", ifb, "up"],
        _tbf(ifb, s),
        *_drop(veth, "ingress", s),
        ["tc", "filter", "add", "dev", veth, "ingress", "pref", "2", "protocol", "all",
         "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect",
         "dev", ifb],
    ]


def heal_commands(veth: str, ifb: str) -> list[list[str]]:
    """Undo slow_commands (the filters go with the clsact qdisc)."""
    return [["tc", "qdisc", "del", "dev", veth, "clsact"],
            ["tc", "qdisc", "del", "dev", veth, "root"],
            ["ip", "link", "del", ifb]]


@dataclass(frozen=True)
class PingResult:
    sent: int
    received: int
    rtt_min_ms: float | None = None
    rtt_avg_ms: float | None = None
    rtt_max_ms: float | None = None

    @property
    def loss(self) -> float:
        return 1 - self.received / self.sent if self.sent else 0.0

    def describe(self) -> dict[str, object]:
        return {"sent": self.sent, "received": self.received, "loss": round(self.loss, 3),
                "rtt_min_ms": self.rtt_min_ms, "rtt_avg_ms": self.rtt_avg_ms,
                "rtt_max_ms": self.rtt_max_ms}


_COUNTS = re.compile(r"(\d+) packets transmitted, (\d+) received")
_RTT = re.compile(r"rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)/[\d.]+ ms")


def parse_ping(text: str) -> PingResult:
    """iputils ping's summary; ValueError when it has none (ping did not run)."""
    counts = _COUNTS.search(text)
    if counts is None:
        raise ValueError(f"no ping summary in: {text[-500:]!r}")
    rtt = _RTT.search(text)
    lo, avg, hi = (float(x) for x in rtt.groups()) if rtt else (None, None, None)
    return PingResult(int(counts[1]), int(counts[2]), lo, avg, hi)

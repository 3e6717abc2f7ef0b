"""What a member runs versus what a restart would give it: the inputs of a rolling change.

A member's fingerprint is the etcd version its binary says and the flags a
restart could change ([etcd] quota, heartbeat, election timeout, extra_args,
the TLS files). The flags that name the member, its URLs, its data dir and its
initial cluster are left out: they are the member's identity (never changed
in place) or ignored by etcd on a data dir that exists. Pure, table-tested.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from ckeetcd.core.etcdversions import parse_version
from ckeetcd.core.model import Health, Runtime

# Flags that are not a setting: who the member is, or only read on a first start.
# The trusted-CA files are not set by config either: they are a CA rotation's own
# fingerprint (ckeetcd.core.carotation names each bundle file by its content and reads
# the running bundle back from the recorded command line), rolled out by the rotation.
# Nor is --peer-cert-allowed-cn: ckeetcd.core.peercn decides it from the peers'
# certificates (rolled out by ckeetcd.core.rollplan.pending once they all carry the CN).
IDENTITY_FLAGS = frozenset({
    "--name", "--data-dir", "--listen-client-urls", "--advertise-client-urls",
    "--listen-peer-urls", "--initial-advertise-peer-urls", "--initial-cluster",
    "--initial-cluster-state", "--initial-cluster-token", "--peer-trusted-ca-file",
    "--trusted-ca-file", "--peer-cert-allowed-cn",
})


def _key(flag: str) -> str:
    return flag.split("=", 1)[0]


def restart_flags(flags: Sequence[str]) -> tuple[str, ...]:
    """The flags of a member command line (binary excluded) a restart may change."""
    return tuple(f for f in flags if _key(f) not in IDENTITY_FLAGS)


def flag_diff(started: Sequence[str], wanted: Sequence[str]) -> tuple[str, ...]:
    """How `wanted` differs from `started` (restart_flags of each), one line per flag:
    `--heartbeat-interval=100 -> --heartbeat-interval=150`, `add --x=1`, `drop --y`.
    Order does not matter (Go's flag package keeps the last of a repeated flag)."""
    old = {_key(f): f for f in started}
    new = {_key(f): f for f in wanted}
    out = []
    for k, f in new.items():
        if k not in old:
            out.append(f"add {f}")
        elif old[k] != f:
            out.append(f"{old[k]} -> {f}")
    out += [f"drop {f}" for k, f in old.items() if k not in new]
    return tuple(out)


def version_change(running: str, wanted: str) -> str:
    """`etcd 3.4.23 -> 3.5.30` when both are known and differ, else ""."""
    a, b = parse_version(running), parse_version(wanted)
    if a is None or b is None or a == b:
        return ""
    return f"etcd {a} -> {b}"


def member_change(runtime: Runtime, health: Health | None) -> tuple[str, ...]:
    """Why a running member needs a restart (() = it runs what it should).

    The version it runs is the one its own Status reports (the truth, also for
    members started before ckeetcd recorded anything); the flags are those its
    node recorded at its start (none recorded: counted as current, recorded at
    its next start)."""
    if not runtime.running:
        return ()
    version = version_change(health.version if health and health.healthy else "",
                             runtime.wanted_version)
    return ((version,) if version else ()) + runtime.flag_change


def change_tag(changes: Mapping[str, Iterable[str]]) -> str:
    """A short name for one rolling change: the set of differences (the same for every
    member of a uniform change, at every step of it), so its pre-change snapshot
    is taken once even when a daemon is killed right after taking it."""
    to = sorted({c for cs in changes.values() for c in cs})
    return hashlib.sha256("\n".join(to).encode()).hexdigest()[:12]

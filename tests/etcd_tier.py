"""The `etcd` marker comes from the `real_etcd` fixture, and only marked tests may run etcd.

Every fixture that starts etcd (`make_cluster`, `cluster`, `lab`, module-scoped
clusters of a test file) depends on `real_etcd`, and conftest marks each test
that uses it (directly or through another fixture) `etcd`; nobody writes the
mark by hand. So `pytest -m "not etcd"` (`./scripts/test --fast`) is the tier
that starts no etcd.

That must stay true when a test starts etcd some other way (a Cluster built in
the test body, an in-process runtime, a daemon subprocess): for every test
without `real_etcd`, $CKEETCD_ETCD_BINARY points at a guard script instead of
etcd. The guard runs the real binary only for ckeetcd's flag probe (which ends
at flag parsing, before etcd starts: ckeetcd.nodes.etcdprobe) and for
`etcd --version` (check-config's version report); any other call
is recorded and refused, and the test then fails naming the command line. The
harness refuses at once (`refuse_unless_allowed`) so such a test fails fast.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from ckeetcd.nodes.etcdprobe import SENTINELS
from ckeetcd.nodes.local import ETCD_BINARY_ENV

FIXTURE = "real_etcd"
# Tests that run another slow real program (promtool, prometheus, a booted systemd) get
# the `tools` mark from this fixture the same way; the fast tier leaves them out too.
TOOLS_FIXTURE = "real_tools"
GUARD_NAME = "etcd-not-in-this-tier"
RECORD_NAME = "etcd-not-in-this-tier.calls"


class EtcdNotAllowed(AssertionError):
    """A test without the `real_etcd` fixture tried to start etcd."""


def write_guard(folder: Path, real_binary: str) -> Path:
    """The guard script in `folder` (pytest's tmp dir); returns its path."""
    guard = folder / GUARD_NAME
    record = folder / RECORD_NAME
    record.touch()
    probe = SENTINELS[0]
    guard.write_text(
        "#!/bin/sh\n"
        "# Stands in for etcd in tests without the real_etcd fixture (tests/etcd_tier.py).\n"
        f'for a in "$@"; do [ "$a" = {shlex.quote(probe)} ] && '
        f'exec {shlex.quote(real_binary)} "$@"; done\n'
        # `etcd --version` (check-config's version report) prints and exits: no etcd runs
        f'[ "$*" = --version ] && exec {shlex.quote(real_binary)} --version\n'
        f'echo "$0 $*" >> {shlex.quote(str(record))}\n'
        'echo "etcd refused: this test has no real_etcd fixture (tests/etcd_tier.py)" >&2\n'
        "exit 97\n"
    )
    guard.chmod(0o755)
    return guard


def calls_since(guard: Path, offset: int) -> tuple[list[str], int]:
    """The refused command lines recorded after byte `offset`, and the new offset."""
    data = (guard.parent / RECORD_NAME).read_bytes()
    return data[offset:].decode(errors="replace").splitlines(), len(data)


def refuse_unless_allowed(what: str) -> None:
    """Raise EtcdNotAllowed when the running test is not allowed to start etcd."""
    if Path(os.environ.get(ETCD_BINARY_ENV, "")).name == GUARD_NAME:
        raise EtcdNotAllowed(f"{what} starts etcd, but the test does not use the "
                             f"`{FIXTURE}` fixture (tests/etcd_tier.py): request it, or a "
                             "fixture that depends on it (make_cluster, cluster, lab)")

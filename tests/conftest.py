from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import netns
from tests.harness import Cluster, wait_for
from tests.netns import Lab


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Build clusters on private loopback addresses; all are cleaned up after the test."""
    made: list[Cluster] = []

    def make(names: list[str] | None = None, extra: str = "", subdir: str = "",
             probe_interval: float = 0.2) -> Cluster:
        root = tmp_path / (subdir or f"c{len(made)}")
        root.mkdir()
        c = Cluster(root, names or ["m1", "m2", "m3"], extra, probe_interval=probe_interval)
        made.append(c)
        return c

    yield make
    for c in made:
        c.cleanup()


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """A bootstrapped, healthy 3-member cluster with its daemon running."""
    c = make_cluster()
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    # ... and its daemon settled: the ops that got it there are logged (a test's
    # mark must not fall between ensure-rbac's effect and its "ok" line)
    wait_for(lambda: [e for e in c.events("cycle") if e["phase"] == "steady"], 30,
             "a steady cycle", abort=c.daemon_died)
    return c


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """Five hosts in network namespaces, each running sshd (tests/netns.py); always removed."""
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    netns.sweep()
    made = Lab(tmp_path / "lab").start()
    try:
        yield made
    finally:
        made.cleanup()

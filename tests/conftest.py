from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ckeetcd.nodes.local import ETCD_BINARY_ENV, resolve_etcd_binary
from tests import etcd_tier, netns
from tests.harness import Cluster, wait_for
from tests.hypothesis_tiers import FAST_PROFILE
from tests.netns import Lab

assert FAST_PROFILE  # registered on import, before --hypothesis-profile=fast is read

# The slow tier's marks and the fixtures they come from: `./scripts/test --fast` runs
# the tests with neither (tests/etcd_tier.py).
MARK_OF_FIXTURE = {etcd_tier.FIXTURE: "etcd", etcd_tier.TOOLS_FIXTURE: "tools"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `etcd` every test that uses the real_etcd fixture, `tools` every one that uses
    real_tools (see tests/etcd_tier.py); a hand-written mark is refused."""
    for item in items:
        used = getattr(item, "fixturenames", ())
        for fixture, mark in MARK_OF_FIXTURE.items():
            if fixture not in used and item.get_closest_marker(mark):
                raise pytest.UsageError(f"{item.nodeid}: marked {mark} by hand; the mark comes "
                                        f"from the {fixture} fixture (tests/etcd_tier.py)")
            if fixture in used:
                item.add_marker(getattr(pytest.mark, mark))


@pytest.fixture(scope="module")
def module_tmp_path(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A dir for one test file's shared cluster or lab, removed after the file like a
    passed test's tmp_path (tmp_path_retention_policy): etcd's preallocated WAL files
    make each cluster hundreds of MB. Kept when a test failed while it was in use."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    failed_before = request.session.testsfailed
    yield path
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def _etcd_guard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The script that stands in for etcd in tests without real_etcd."""
    real = resolve_etcd_binary("")
    return etcd_tier.write_guard(tmp_path_factory.mktemp("etcd-guard"), real)


@pytest.fixture(scope="session")
def real_etcd() -> str:
    """The etcd binary the tests run; a test that starts etcd needs this (or a fixture
    that depends on it), which is also what marks it `etcd`."""
    return resolve_etcd_binary("")


@pytest.fixture(scope="session")
def real_tools() -> None:
    """Requested by the fixtures that run a real program other than etcd for seconds
    (promtool and prometheus, a booted systemd); it marks their tests `tools`."""


@pytest.fixture(autouse=True)
def _no_etcd_without_real_etcd(request: pytest.FixtureRequest, _etcd_guard: Path,
                               monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Outside the etcd tier, etcd is the guard: a test that starts it fails."""
    if etcd_tier.FIXTURE in request.fixturenames:
        yield
        return
    _, offset = etcd_tier.calls_since(_etcd_guard, 0)
    monkeypatch.setenv(ETCD_BINARY_ENV, str(_etcd_guard))
    yield
    calls, _ = etcd_tier.calls_since(_etcd_guard, offset)
    if calls:
        pytest.fail(f"started etcd without the {etcd_tier.FIXTURE} fixture "
                    f"(tests/etcd_tier.py): {calls}", pytrace=False)


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event logged in this process during the test, as captured by
    structlog.testing.capture_logs (`event`, `log_level` and the event's keys); pass
    `structlog.get_logger()` to the part under test."""
    with capture_logs() as captured:
        yield captured


@pytest.fixture
def make_cluster(tmp_path: Path, real_etcd: str) -> Iterator[Callable[..., Cluster]]:
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
def lab(tmp_path: Path, real_etcd: str) -> Iterator[Lab]:
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

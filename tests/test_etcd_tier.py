"""The fast tier (`-m "not etcd"`) cannot start etcd: tests/etcd_tier.py's guard."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ckeetcd.nodes.etcdprobe import SENTINELS
from ckeetcd.nodes.local import ETCD_BINARY_ENV, resolve_etcd_binary
from tests import etcd_tier
from tests.harness import Cluster


def test_a_test_without_real_etcd_gets_the_guard_as_etcd(tmp_path: Path) -> None:
    """Started by any route (here: the binary a daemon would resolve), etcd is refused,
    and the call is recorded for conftest to fail the test with."""
    binary = Path(resolve_etcd_binary(""))
    assert binary.name == etcd_tier.GUARD_NAME
    _, offset = etcd_tier.calls_since(binary, 0)
    r = subprocess.run([str(binary), "--name=m1", f"--data-dir={tmp_path}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 97 and "real_etcd" in r.stderr
    calls, _ = etcd_tier.calls_since(binary, offset)
    assert calls == [f"{binary} --name=m1 --data-dir={tmp_path}"]
    # conftest would fail this test now; forget the call so that it does not
    (binary.parent / etcd_tier.RECORD_NAME).write_bytes(
        (binary.parent / etcd_tier.RECORD_NAME).read_bytes()[:offset])


def test_the_flag_probe_still_reaches_the_real_binary() -> None:
    """ckeetcd's flag probe ends at flag parsing: allowed in the fast tier."""
    binary = resolve_etcd_binary("")
    r = subprocess.run([binary, *SENTINELS], capture_output=True, text=True, timeout=30)
    assert "flag provided but not defined: -ckeetcd-probe-1" in r.stdout + r.stderr


def test_the_harness_refuses_a_cluster_at_once(tmp_path: Path) -> None:
    with pytest.raises(etcd_tier.EtcdNotAllowed, match="real_etcd"):
        Cluster(tmp_path, ["m1"])


def test_with_real_etcd_the_binary_is_etcd(real_etcd: str) -> None:
    assert Path(os.environ.get(ETCD_BINARY_ENV, real_etcd)).name != etcd_tier.GUARD_NAME
    assert Path(resolve_etcd_binary("")).name != etcd_tier.GUARD_NAME


def test_real_tools_marks_its_tests_tools(request: pytest.FixtureRequest,
                                          real_tools: None) -> None:
    """The fixtures that run promtool, prometheus or a booted systemd depend on real_tools:
    their tests carry `tools`, and `./scripts/test --fast` leaves them out."""
    assert request.node.get_closest_marker("tools") is not None
    assert request.node.get_closest_marker("etcd") is None

"""prometheus/ckeetcd-alerts.yml: promtool's unit tests, rules only on metrics that exist,
and a real Prometheus (Debian's 2.42, scripts/fetch-prometheus) scraping a daemon."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from ckeetcd.tasks.metrics import Metrics
from tests.harness import Cluster, wait_for

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "prometheus" / "ckeetcd-alerts.yml"
RULE_TESTS = REPO / "prometheus" / "ckeetcd-alerts.test.yml"


def prometheus_dir() -> Path:
    """Where promtool and prometheus are: $CKEETCD_PROMETHEUS_DIR, else fetched."""
    given = os.environ.get("CKEETCD_PROMETHEUS_DIR")
    if given:
        return Path(given)
    done = subprocess.run([str(REPO / "scripts" / "fetch-prometheus")], capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"no prometheus: scripts/fetch-prometheus: {done.stderr.strip()}")
    return Path(done.stdout.split()[1])


@pytest.fixture(scope="module")
def bins(real_tools: None) -> Path:
    """promtool and prometheus run for seconds: their tests are in the `tools` tier."""
    return prometheus_dir()


def alerts() -> list[str]:
    return re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M)


def test_promtool_rule_unit_tests_pass(bins: Path) -> None:
    check = subprocess.run([str(bins / "promtool"), "check", "rules", str(RULES)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    done = subprocess.run([str(bins / "promtool"), "test", "rules", RULE_TESTS.name],
                          cwd=RULE_TESTS.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_every_alert_is_shown_firing_by_a_rule_test() -> None:
    text = RULE_TESTS.read_text()
    fired = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:", text))
    assert set(alerts()) == fired, set(alerts()) ^ fired


def test_rules_use_only_metrics_the_daemon_exports() -> None:
    exported = {m.name for m in Metrics().registry.collect()}
    exported |= {f"{n}_total" for n in exported}
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    used = set(re.findall(r"\bckeetcd_[a-z_]+", "\n".join(exprs)))
    assert len(exprs) == len(alerts()) and used, exprs
    assert used <= exported, used - exported


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@pytest.mark.usefixtures("real_etcd")
def test_a_real_prometheus_scrapes_the_daemon(make_cluster, tmp_path: Path,  # type: ignore[no-untyped-def]
                                              bins: Path) -> None:
    c: Cluster = make_cluster(extra='[metrics]\naddress = "127.0.0.1:0"\n')
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    target = wait_for(lambda: c.events("metrics_listening"), 20, "metrics")[0]["address"]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{RULES}]\n"
        "scrape_configs:\n"
        f"  - {{job_name: ckeetcd, static_configs: [{{targets: ['{target}']}}]}}\n")
    listen = f"{c.block}.9:9090"
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - the child keeps it
    prom = subprocess.Popen([str(bins / "prometheus"), f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address={listen}"], stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    log.close()
    base = f"http://{listen}"
    try:
        def quorum() -> list[dict[str, Any]]:
            if prom.poll() is not None:
                raise AssertionError((tmp_path / "prometheus.log").read_text()[-2000:])
            return [r for r in query(base, 'ckeetcd_has_quorum{job="ckeetcd"}')
                    if r["value"][1] == "1"]

        got = wait_for(quorum, 60, "ckeetcd_has_quorum == 1 through Prometheus")
        assert got[0]["metric"]["instance"] == target
        healthy = query(base, 'sum(ckeetcd_member_healthy{job="ckeetcd"})')
        assert healthy[0]["value"][1] == "3", healthy
        with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5) as r:
            rules = json.load(r)["data"]["groups"][0]["rules"]
        assert sorted(x["name"] for x in rules) == sorted(alerts())
        assert all(x["health"] == "ok" for x in rules), rules
    finally:
        prom.terminate()
        prom.wait(30)

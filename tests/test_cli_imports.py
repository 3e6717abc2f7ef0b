"""`ckecli etcd issue` loads only what signing needs (issue 13: its latency target).

A fresh interpreter runs the command as the console script does and lists the
modules loaded by then: no gRPC or etcd client, no asyncio, no structlog, no
SSH or Kubernetes client, and not the temp-file machinery (tempfile, random)
that only commands writing files use. Measured in bench/cli_latency.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ckeetcd.pki import ensure_ca

RUN_AND_LIST = (
    "import json, sys\n"
    "from ckeetcd.cli.main import ckecli_main\n"
    "sys.argv = ['ckecli', 'etcd', 'issue', '-ttl=24h', '-output=json', 'app']\n"
    "code = ckecli_main()\n"
    "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}), file=sys.stderr)\n"
)
NOT_ON_THE_PATH = ("grpc", "aetcd", "asyncio", "structlog", "asyncssh", "kubernetes_asyncio",
                   "aiohttp", "prometheus_client", "tempfile", "ckeetcd.etcd",
                   "ckeetcd.loop", "ckeetcd.nodes", "ckeetcd.ops", "ckeetcd.tasks")


def test_issue_loads_no_client_no_logging_no_tempfile(tmp_path: Path) -> None:
    ensure_ca(tmp_path / "state" / "pki", "imports")
    config = tmp_path / "ckeetcd.toml"
    config.write_text(f'[cluster]\nname = "imports"\nstate_dir = "{tmp_path / "state"}"\n\n'
                      '[[members]]\nname = "m1"\naddress = "127.0.0.1"\n')
    r = subprocess.run([sys.executable, "-c", RUN_AND_LIST], capture_output=True, text=True,
                       env={**os.environ, "CKEETCD_CONFIG": str(config)}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "BEGIN CERTIFICATE" in json.loads(r.stdout)["certificate"]
    done = json.loads(r.stderr.splitlines()[-1])
    assert done["code"] == 0
    loaded = [m for m in done["modules"]
              if any(m == n or m.startswith(n + ".") for n in NOT_ON_THE_PATH)]
    assert loaded == [], loaded

"""The JSON log is all JSON: native libraries' stderr lines become events too.

grpc's C core writes its own plain-text lines (`E1201 ... Handshake failed`)
straight to file descriptor 2; with TLS failing that was most of a daemon's
log, and a log shipper reading JSON lines dropped or mangled them.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ckeetcd.pki import ensure_ca, write_cert_key
from ckeetcd.support.logs import parse_native
from tests.harness import Cluster


def foreign_view(cluster: Cluster, root: Path) -> Path:
    """A config for the same members whose state dir holds another CA: every TLS
    handshake with the members fails certificate verification."""
    state = root / "state"
    pki = state / "pki"
    ca = ensure_ca(pki, "foreign")
    write_cert_key(pki / "daemon-root.crt", pki / "daemon-root.key",
                   ca.issue("root", dt.timedelta(days=1)))
    text = cluster.config_path.read_text().replace(str(cluster.state_dir), str(state))
    path = root / "foreign.toml"
    path.write_text(text)
    return path


@pytest.mark.etcd
def test_tls_failures_leave_a_log_of_json_lines_only(cluster: Cluster, tmp_path: Path) -> None:
    config = foreign_view(cluster, tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "ckeetcd.cli.main", "status", "--config", str(config),
         "--log-format", "json", "--output", "json"],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "GRPC_VERBOSITY": "INFO"},  # as chatty as grpc gets
    )
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    not_json = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not not_json, f"{len(not_json)} of {len(lines)} lines not JSON: {not_json[:5]}"
    events = [json.loads(line) for line in lines]
    native = [e for e in events if e["event"] == "native_log"]
    assert native, "grpc's own lines should arrive as native_log events"
    assert any("CERTIFICATE_VERIFY_FAILED" in e["line"] or "andshake" in e["line"]
               for e in native), native[:3]
    assert all(e["level"] in ("debug", "info", "warning", "error", "critical") for e in native)
    # stdout stays the command's own output
    status = json.loads(r.stdout)
    assert all(not m["healthy"] for m in status["members"])


@pytest.mark.parametrize(("line", "level", "source", "text"), [
    ("E1201 10:03:50.958550    9025 ssl_transport_security.cc:2563] Handshake failed",
     "error", "ssl_transport_security.cc:2563", "Handshake failed"),
    ("I1201 10:03:50.957778 9025 chttp2_transport.cc:1] x", "info", "chttp2_transport.cc:1", "x"),
    ("W0101 00:00:00.000000 1 log.cc:102] Log level INFO", "warning", "log.cc:102",
     "Log level INFO"),
    ("F1231 23:59:59.999999 7 a.cc:9] boom", "critical", "a.cc:9", "boom"),
    ("something else entirely", "warning", "stderr", "something else entirely"),
    ("E1201 but not the format", "warning", "stderr", "E1201 but not the format"),
])
def test_parse_native(line: str, level: str, source: str, text: str) -> None:
    assert parse_native(line) == {"level": level, "source": source, "line": text}

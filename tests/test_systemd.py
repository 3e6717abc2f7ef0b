"""systemd/ckeetcd.service (systemd-analyze verify and security, when installed) and
the sd_notify client (ckeetcd/support/sdnotify.py) on real datagram sockets."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ckeetcd.support.sdnotify import Notifier

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "ckeetcd.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed "
                                   "(Debian package `systemd`)")


def unit_here(tmp_path: Path) -> Path:
    """The unit with /usr/local/bin/ckeetcd pointed at this venv's ckeetcd (verify checks
    that ExecStart binaries exist)."""
    ckeetcd = Path(sys.executable).parent / "ckeetcd"
    assert ckeetcd.exists()
    out = tmp_path / "ckeetcd.service"
    out.write_text(UNIT.read_text().replace("/usr/local/bin/ckeetcd", str(ckeetcd)))
    return out


def service_section() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_unit_keeps_what_operators_rely_on() -> None:
    s = service_section()
    expect = {"Type": "notify", "NotifyAccess": "main", "KillMode": "process",
              "Restart": "on-failure", "ExecReload": "/bin/kill -HUP $MAINPID",
              "ProtectSystem": "strict", "StateDirectory": "ckeetcd", "NoNewPrivileges": "yes",
              "PrivateTmp": "yes", "ProtectHome": "yes"}
    for key, value in expect.items():
        assert s.get(key) == [value], (key, s.get(key))
    assert int(s["WatchdogSec"][0]) >= 30  # an observation never takes that long


@needs_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    r = subprocess.run([str(ANALYZE), "verify", str(unit_here(tmp_path))],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r


@needs_analyze
def test_unit_security_exposure_stays_low(tmp_path: Path) -> None:
    """docs/operator-guide.md quotes this number: keep the two in step."""
    r = subprocess.run([str(ANALYZE), "security", "--offline=true", "--no-pager",
                        str(unit_here(tmp_path))], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for ckeetcd\.service: ([\d.]+)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    assert float(m.group(1)) <= 2.0
    guide = (REPO / "docs" / "operator-guide.md").read_text()
    assert f"exposure level {m.group(1)}" in guide


# ---- the notify client -------------------------------------------------------------
def receiver(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + address[1:] if address.startswith("@") else address)
    s.settimeout(2)
    return s


def test_notifier_sends_to_an_abstract_socket_and_takes_the_env() -> None:
    name = f"@ckeetcd-test-{os.getpid()}"
    with receiver(name) as rx:
        env = {"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid()),
               "OTHER": "kept"}
        n = Notifier.from_env(env)
        assert env == {"OTHER": "kept"}, "children must not inherit the notify socket"
        assert n.ping_interval == 2.0
        assert n.ready("steady")
        assert rx.recv(4096) == b"READY=1\nSTATUS=steady"
        assert n.ping() and not n.ping()  # at most once per half watchdog interval
        assert rx.recv(4096) == b"WATCHDOG=1"
        assert n.reloading()
        assert re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=\d+", rx.recv(4096))
        assert n.status("degraded") and not n.status("degraded")
        assert rx.recv(4096) == b"STATUS=degraded"
        n.stopping()
        assert rx.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_notifier_to_a_path_and_without_systemd(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with receiver(path) as rx:
        n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000",
                               "WATCHDOG_PID": "1"})
        assert n.ping_interval is None, "a watchdog meant for another PID is not ours"
        assert n.ready() and rx.recv(4096) == b"READY=1"
    off = Notifier.from_env({})
    assert not off.enabled and not off.ready() and not off.ping() and not off.stopping()
    gone = Notifier(str(tmp_path / "nobody-listens"), 1_000_000)
    assert not gone.ready() and not gone.ping(), "an undeliverable message is dropped"

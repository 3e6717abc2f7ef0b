"""Private keys on real etcd: 0600 files in 0700 dirs, never in a log or output.

One cluster for the module: bootstrap, then the things that touch key
material (a daemon restart, a member restarted by the daemon, a reload, the
read-only commands), then every check against everything written.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Cluster, wait_for

NAMES = ["m1", "m2", "m3"]


class Scene:
    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.outputs: dict[str, str] = {}


@pytest.fixture(scope="module")
def scene(module_tmp_path: Path, real_etcd: str) -> Iterator[Scene]:
    c = Cluster(module_tmp_path, NAMES)
    s = Scene(c)
    try:
        c.start_daemon()
        c.wait_healthy(NAMES)

        # A member dies: the daemon starts it again (member TLS is re-checked).
        old = c.member_pid("m2")
        assert old is not None
        os.kill(old, signal.SIGKILL)  # a process the harness's daemon started for us
        wait_for(lambda: (c.member_pid("m2") or old) != old, 60, "m2 restarted by the daemon")
        c.wait_healthy(NAMES)

        # Reload, then a daemon restart (adopts members, re-reads the PKI).
        assert c.daemon is not None
        mark = c.mark()
        c.daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: c.events("config_reloaded", since=mark), 30, "the SIGHUP reload")
        assert c.stop_daemon() == 0
        c.start_daemon()
        c.wait_healthy(NAMES)

        for args in (("status",), ("status", "--output", "json"), ("plan",),
                     ("plan", "--output", "json"), ("check-config",)):
            r = c.cli(*args, "--log-format", "json")
            assert r.returncode == 0, (args, r.stderr)
            s.outputs[" ".join(args)] = r.stdout + r.stderr
        yield s
    finally:
        c.cleanup()


def key_files(state_dir: Path) -> list[Path]:
    return sorted(p for p in state_dir.rglob("*.key") if p.is_file())


def secret_lines(keys: list[Path]) -> set[str]:
    """Every line of every PEM key body (the base64, not the BEGIN/END armor)."""
    lines = set()
    for k in keys:
        for line in k.read_text().splitlines():
            if line.strip() and not line.startswith("-----"):
                lines.add(line.strip())
    return lines


def texts(scene: Scene) -> dict[str, str]:
    """Everything a person or a log shipper may read: logs, history, outputs, state files.

    Only etcd's own data dirs (`members/NAME/data*`) and the keys are left out.
    """
    c = scene.c
    out = {"daemon log": c.daemon_log.read_text(errors="replace")}
    for name, text in scene.outputs.items():
        out[f"`ckeetcd {name}`"] = text
    for p in sorted(c.state_dir.rglob("*")):
        rel = p.relative_to(c.state_dir)
        etcd_data = rel.parts[0] == "members" and len(rel.parts) > 2 and \
            rel.parts[2].startswith("data")
        if p.is_file() and p.suffix != ".key" and not etcd_data:
            out[str(rel)] = p.read_bytes().decode(errors="replace")
    return out


def test_keys_are_0600_in_0700_dirs(scene: Scene) -> None:
    state = scene.c.state_dir
    keys = key_files(state)
    names = {str(k.relative_to(state)) for k in keys}
    assert {"pki/ca.key", "pki/daemon-root.key"} <= names, names
    for m in NAMES:
        assert {f"members/{m}/tls/server.key", f"members/{m}/tls/peer.key"} <= names, names
    for k in keys:
        mode = stat.S_IMODE(k.stat().st_mode)
        assert mode == 0o600, f"{k}: mode {mode:o}"
        assert k.stat().st_uid == os.getuid()
        parent = stat.S_IMODE(k.parent.stat().st_mode)
        assert parent == 0o700, f"{k.parent}: mode {parent:o}"
    for d in (state, state / "pki"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_no_half_written_key_is_left_behind(scene: Scene) -> None:
    # write_atomic writes `.NAME.XXXX` then renames; none may survive.
    leftovers = [p for p in scene.c.state_dir.rglob(".*") if ".key." in p.name]
    assert leftovers == []


def test_no_private_key_in_logs_history_or_output(scene: Scene) -> None:
    c = scene.c
    secrets = secret_lines(key_files(c.state_dir))
    assert len(secrets) >= 3 * (2 + 2 * len(NAMES))  # ca, daemon, 2 per member
    seen = texts(scene)
    assert "history.jsonl" in seen and seen["history.jsonl"].strip(), "no history recorded"
    assert len(seen["daemon log"].splitlines()) > 10, "the daemon logged almost nothing"
    for where, text in seen.items():
        assert "PRIVATE KEY" not in text, f"a private key in {where}"
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"private key material in {where}"
    # The logs do talk about certificates, they just never carry a key.
    assert "m1" in seen["daemon log"]


def test_client_key_files_written_by_ckecli_are_0600(scene: Scene, tmp_path: Path) -> None:
    r = scene.c.cli("etcd", "root-issue", "--output", "file", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    key = tmp_path / "etcd-root.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in r.stdout + r.stderr

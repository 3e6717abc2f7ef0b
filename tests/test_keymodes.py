"""Private keys opened up to others: the daemon puts back 0600, warns, and status shows it.

The CA key, the daemon's client key and a member's server key made 0644
under a running daemon are fixed within a full cycle (`key_mode_fixed`,
old mode named); a key the daemon does not own is reported (`key_mode_bad`)
and left alone. `ckeetcd status` (text and JSON) shows both. Key contents
never appear in the log or the output.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

from ckeetcd.tasks.keymodes import key_files, scan
from tests.harness import Cluster, wait_for


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_scan_fixes_own_keys_and_reports_others(tmp_path: Path) -> None:
    state = tmp_path / "state"
    tls = state / "members" / "m1" / "tls"
    tls.mkdir(parents=True)
    (state / "pki").mkdir()
    keys = {n: p for n, p in (("ca", state / "pki" / "ca.key"),
                              ("server", tls / "server.key"),
                              ("pending", state / "pki" / "daemon-root.key.pending"),
                              ("fine", tls / "peer.key"))}
    for p in keys.values():
        p.write_text("secret\n")
        p.chmod(0o644)
    keys["fine"].chmod(0o600)
    os.chown(keys["server"], 65534, 65534)
    (state / "pki" / "ca.crt").write_text("public\n")
    (state / "pki" / "ca.crt").chmod(0o644)
    assert key_files(state) == sorted(keys.values())
    found = {Path(f.path).name: f for f in scan(key_files(state), fix=True)}
    assert set(found) == {"ca.key", "server.key", "daemon-root.key.pending"}
    assert found["ca.key"].fixed and found["ca.key"].mode == "0644"
    assert not found["server.key"].fixed and "owned by uid 65534" in found["server.key"].problem
    assert mode(keys["ca"]) == 0o600 and mode(keys["pending"]) == 0o600
    assert mode(keys["server"]) == 0o644  # not ours: reported, never chmod-ed
    assert mode(state / "pki" / "ca.crt") == 0o644  # not a key
    assert [f.path for f in scan(key_files(state), fix=False)] == [str(keys["server"])]


def test_opened_keys_are_fixed_logged_and_shown_in_status(
        make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster()
    c.start_daemon()
    c.wait_healthy(["m1", "m2", "m3"])
    pki = c.state_dir / "pki"
    opened = [pki / "ca.key", pki / "daemon-root.key",
              c.state_dir / "members" / "m1" / "tls" / "server.key",
              c.state_dir / "members" / "m2" / "tls" / "peer.key"]
    stranger = c.state_dir / "members" / "m3" / "tls" / "server.key"
    mark = c.mark()
    for p in [*opened, stranger]:
        p.chmod(0o644)
    os.chown(stranger, 65534, 65534)  # etcd runs as root: it still reads it
    want = {str(p) for p in opened}
    wait_for(lambda: {e["path"] for e in c.events("key_mode_fixed", since=mark)} >= want, 30,
             "the opened keys fixed", abort=c.daemon_died)
    for e in c.events("key_mode_fixed", since=mark):
        assert e["old_mode"] == "0644" and e["mode"] == "0600" and e["level"] == "warning"
    assert all(mode(p) == 0o600 for p in opened)
    bad = wait_for(lambda: c.events("key_mode_bad", since=mark), 30, "the stranger's key")
    assert [e["path"] for e in bad] == [str(stranger)] and "uid 65534" in bad[0]["reason"]
    assert mode(stranger) == 0o644
    # logged once, not on every cycle
    cycles = len(c.events("cycle", since=mark))
    wait_for(lambda: len(c.events("cycle", since=mark)) >= cycles + 3, 60, "three more cycles")
    assert len(c.events("key_mode_bad", since=mark)) == 1

    r = c.cli("status", "--output", "json")
    assert r.returncode == 0, r.stderr
    shown = {k["path"]: k for k in json.loads(r.stdout)["key_modes"]}
    for p in opened:
        assert shown[str(p)]["fixed"] is True and shown[str(p)]["mode"] == "0644"
        assert shown[str(p)]["bad_now"] is False
    assert shown[str(stranger)]["fixed"] is False and shown[str(stranger)]["bad_now"] is True
    text = c.cli("status")
    assert text.returncode == 0, text.stderr
    assert f"key: {pki / 'ca.key'}: was mode 0644" in text.stdout
    assert f"key: {stranger}: mode 0644, readable by others, NOT fixed" in text.stdout

    secrets = {line for p in [*opened, stranger] for line in p.read_text().splitlines()
               if line and not line.startswith("-----")}
    everything = c.daemon_log.read_text() + r.stdout + text.stdout
    assert not [s for s in secrets if s in everything]

    # at start, too: a key opened while the daemon was down
    assert c.stop_daemon() == 0
    (pki / "ca.key").chmod(0o640)
    mark = c.mark()
    c.start_daemon()
    wait_for(lambda: c.events("key_mode_fixed", since=mark), 30, "the fix at start",
             abort=c.daemon_died)
    wait_for(lambda: c.events("daemon_started", since=mark), 30, "daemon_started",
             abort=c.daemon_died)  # logged after the fix: read both before comparing
    first = c.events(since=mark)
    assert [e["event"] for e in first].index("key_mode_fixed") < \
        [e["event"] for e in first].index("daemon_started")
    assert mode(pki / "ca.key") == 0o600

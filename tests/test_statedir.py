"""The state dir: never a system folder, never someone else's folder, never a traceback.

Pure tables first (the config check and the take-or-refuse decision), then
`ckeetcd run` against a shared sticky folder with a stranger's file in it
(refused, nothing changed; then adopted on request, still never chmod-ed),
the upgrade path (a state dir of an earlier ckeetcd, no marker), and every
command against a state dir that is a file, under a file, immutable, on
/proc or with a NUL: exit 1 or 2 with the path named, no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ckeetcd.cli.main import main
from ckeetcd.core.config import ConfigError, load_config, parse_config
from ckeetcd.core.syspaths import system_dir_problem
from ckeetcd.support.statedir import MARKER, Facts, StateDirError, claim_state_dir, verdict
from tests.harness import Cluster, wait_for

HOME = "/home/alice"

REFUSED = ["/", "/tmp", "/tmp/", "//tmp", "/var/lib/../tmp", "/usr/local/..", "/var/tmp",
           "/etc", "/usr", "/var", "/var/lib", "/var/log", "/home", "/root", "/root/",
           "/run", "/boot", "/opt", "/srv", "/bin", "/sbin", "/lib", "/lib64", "/mnt",
           "/proc", "/proc/self", "/proc/1/cwd", "/sys/kernel", "/dev/shm", "/dev/x",
           "/home/bob", HOME, HOME + "/", "/home/alice/../alice", "/a\x00b", "/a\nb",
           "relative"]
ALLOWED = ["/var/lib/ckeetcd", "/srv/ckeetcd", "/tmp/ckeetcd-test", "/home/alice/.ckeetcd",
           "/opt/ckeetcd/state", "/var/lib/ckeetcd/../ckeetcd2", "/run/ckeetcd"]


@pytest.mark.parametrize("path", REFUSED)
def test_system_folders_are_refused(path: str) -> None:
    assert system_dir_problem(path, (HOME,)) != ""


@pytest.mark.parametrize("path", ALLOWED)
def test_folders_of_its_own_are_allowed(path: str) -> None:
    assert system_dir_problem(path, (HOME,)) == ""


def config_problems(state_dir: str, base: Path = Path("/etc/ckeetcd/ckeetcd.toml")) -> list[str]:
    data = {"cluster": {"name": "c", "state_dir": state_dir},
            "members": [{"name": "m1", "address": "10.0.0.1"}]}
    try:
        parse_config(data, base)
    except ConfigError as e:
        return [f"{p.key}: {p.message}" for p in e.problems]
    return []


@pytest.mark.parametrize("state_dir", ["/", "/tmp", "/var/tmp/", "/etc/..", "..", "../..",
                                       "../../../../../../../../tmp", "/proc/self/x",
                                       "s\x00t", "/home/x"])
def test_config_refuses_a_shared_state_dir_naming_the_key(state_dir: str) -> None:
    found = config_problems(state_dir)
    assert len(found) == 1 and found[0].startswith("cluster.state_dir: "), found


def test_config_accepts_its_own_folder_and_adopt_flag() -> None:
    assert config_problems("/var/lib/ckeetcd") == []
    assert config_problems("state") == []  # /etc/ckeetcd/state
    data = {"cluster": {"name": "c", "state_dir": "/srv/x", "adopt_state_dir": "yes"},
            "members": [{"name": "m1", "address": "10.0.0.1"}]}
    with pytest.raises(ConfigError, match=r"cluster\.adopt_state_dir: must be true or false"):
        parse_config(data, Path("/etc/c.toml"))


def test_check_config_refuses_tmp_and_writes_nothing(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    for value in ("/tmp", "/", '../' * 40 + 'tmp'):
        cfg.write_text(f'[cluster]\nname = "c"\nstate_dir = "{value}"\n\n'
                       '[[members]]\nname = "m1"\naddress = "10.0.0.1"\n')
        with pytest.raises(SystemExit) as e:
            main(["check-config", "--config", str(cfg)])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"{cfg}: cluster.state_dir: " in err and "system folder" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


# ---- the decision: take, adopt or refuse ----------------------------------------------


def test_verdict_table() -> None:
    ours = {"format": "ckeetcd-state/1", "created": True}
    adopted = {"format": "ckeetcd-state/1", "created": False}
    cases: list[tuple[Facts, bool, str, str, bool, bool]] = [
        # facts, adopt -> action, how, fix_mode, open_mode ("!" how = refused)
        (Facts(exists=False), False, "create", "created", False, False),
        (Facts(exists=True, is_dir=False), True, "use", "!", False, False),
        (Facts(exists=True, entries=(MARKER, "pki"), marker=ours), False, "use", "marker",
         False, False),
        (Facts(exists=True, entries=(MARKER,), marker=ours, mode=0o755), False, "use",
         "marker", True, True),
        (Facts(exists=True, entries=(MARKER,), marker=ours, mode=0o755, owned=False), False,
         "use", "marker", False, True),
        (Facts(exists=True, entries=(MARKER,), marker=adopted, mode=0o1777), False, "use",
         "marker", False, True),
        (Facts(exists=True, entries=(MARKER,), marker={}, mode=0o700), False, "use", "marker",
         False, False),
        (Facts(exists=True), False, "adopt", "empty", False, False),
        (Facts(exists=True, mode=0o755), False, "adopt", "empty", False, True),
        (Facts(exists=True, entries=("pki", "members"), earlier=("pki/ca.crt",)), False,
         "adopt", "earlier-ckeetcd", False, False),
        (Facts(exists=True, entries=("history.jsonl",), earlier=("history.jsonl",)), False,
         "adopt", "earlier-ckeetcd", False, False),
        (Facts(exists=True, entries=("notes.txt",), mode=0o1777), False, "use", "!", False,
         False),
        (Facts(exists=True, entries=("notes.txt",), mode=0o1777), True, "adopt",
         "adopt_state_dir", False, True),
    ]
    for facts, adopt, action, how, fix, open_ in cases:
        v = verdict(facts, adopt)
        assert (v.action, "!" if v.refusal else v.how, v.fix_mode, v.open_mode) == \
            (action, how, fix, open_), (facts, adopt, v)
    refusal = verdict(Facts(exists=True, entries=("notes.txt",)), False).refusal
    assert "notes.txt" in refusal and "adopt_state_dir = true" in refusal and MARKER in refusal


def test_claim_resolves_symlinks_and_dotdot_before_the_check(tmp_path: Path) -> None:
    """The config sees tmp_path/lnk/.. (fine); the kernel sees /proc: refused, nothing
    written (a write to /proc would fail anyway: no harm even if the check were wrong)."""
    (tmp_path / "lnk").symlink_to("/proc/sys")
    with pytest.raises(StateDirError, match="resolves to /proc: /proc is a system folder"):
        claim_state_dir(tmp_path / "lnk" / "..", "c")
    (tmp_path / "to-proc").symlink_to("/proc")
    with pytest.raises(StateDirError, match="/proc is a system folder"):
        claim_state_dir(tmp_path / "to-proc", "c")


def test_claim_creates_0700_with_a_marker_and_fixes_only_its_own_folder(tmp_path: Path) -> None:
    state = tmp_path / "a" / "state"
    taken = claim_state_dir(state, "c")
    assert taken.how == "created"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(state.parent.stat().st_mode) == 0o700  # made here too
    marker = json.loads((state / MARKER).read_text())
    assert marker["created"] is True and marker["cluster"] == "c"
    state.chmod(0o755)
    taken = claim_state_dir(state, "c")
    assert [n[1] for n in taken.notes] == ["state_dir_mode_fixed"]
    assert stat.S_IMODE(state.stat().st_mode) == 0o700

    given = tmp_path / "given"  # made by the operator (or systemd's StateDirectory=)
    given.mkdir(mode=0o755)
    given.chmod(0o755)
    taken = claim_state_dir(given, "c")
    assert taken.how == "empty" and [n[1] for n in taken.notes] == \
        ["state_dir_adopted", "state_dir_mode_open"]
    assert stat.S_IMODE(given.stat().st_mode) == 0o755  # warned about, never chmod-ed
    assert [n[1] for n in claim_state_dir(given, "c").notes] == ["state_dir_mode_open"]
    assert stat.S_IMODE(given.stat().st_mode) == 0o755


# ---- ckeetcd run on a shared folder ------------------------------------------------------


def shared_folder(path: Path) -> dict[str, Any]:
    """A sticky, world-writable folder (like /tmp) holding a stranger's file."""
    path.mkdir()
    path.chmod(0o1777)
    f = path / "their-notes.txt"
    f.write_text("not yours\n")
    os.chown(f, 65534, 65534)
    f.chmod(0o640)
    return snapshot(path)


def snapshot(path: Path) -> dict[str, Any]:
    return {"mode": stat.S_IMODE(path.stat().st_mode),
            "entries": {p.name: (stat.S_IMODE(p.lstat().st_mode), p.lstat().st_uid,
                                 p.read_bytes() if p.is_file() else None)
                        for p in path.iterdir()}}


def run_until_exit(c: Cluster) -> int:
    p = c.start_daemon()
    return p.wait(120)


def started(c: Cluster, mark: int) -> None:
    wait_for(lambda: c.events("daemon_started", since=mark), 60, "the daemon started",
             abort=c.daemon_died)
    c.wait_healthy([m.name for m in c.config.members])


def set_adopt(c: Cluster, on: bool) -> None:
    text = c.config_path.read_text().replace("adopt_state_dir = true\n", "")
    if on:
        text = text.replace("[cluster]\n", "[cluster]\nadopt_state_dir = true\n", 1)
    c.config_path.write_text(text)


def test_run_refuses_a_shared_folder_then_adopts_it_on_request_without_chmod(
        make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster(["m1"])
    before = shared_folder(c.state_dir)
    assert run_until_exit(c) == 2
    [refused] = c.events("state_dir_refused")
    assert refused["state_dir"] == str(c.state_dir) and refused["key"] == "cluster.state_dir"
    assert refused["file"] == str(c.config_path)
    assert "their-notes.txt" in refused["error"] and "adopt_state_dir = true" in refused["error"]
    assert snapshot(c.state_dir) == before  # mode 1777 and contents: untouched
    assert "Traceback" not in c.daemon_log.read_text()

    set_adopt(c, True)
    mark = c.mark()
    c.start_daemon()
    c.wait_healthy(["m1"])
    assert [e["how"] for e in c.events("state_dir_adopted", since=mark)] == ["adopt_state_dir"]
    assert c.events("state_dir_mode_open", since=mark)
    assert stat.S_IMODE(c.state_dir.stat().st_mode) == 0o1777  # still not chmod-ed
    assert snapshot(c.state_dir)["entries"]["their-notes.txt"] == \
        before["entries"]["their-notes.txt"]
    assert (c.state_dir / MARKER).is_file()
    assert stat.S_IMODE((c.state_dir / "pki").stat().st_mode) == 0o700  # made here

    assert c.stop_daemon() == 0
    set_adopt(c, False)  # adopted once: the marker makes it ours
    mark = c.mark()
    c.start_daemon()
    started(c, mark)
    assert not c.events("state_dir_refused", since=mark)


def test_a_state_dir_of_an_earlier_ckeetcd_keeps_working(
        make_cluster: Callable[..., Cluster]) -> None:
    """Upgrade path: no marker yet (the earlier version wrote none): recognised, marked."""
    c = make_cluster(["m1"])
    c.start_daemon()
    c.wait_healthy(["m1"])
    assert c.stop_daemon() == 0
    ca = (c.state_dir / "pki" / "ca.crt").read_bytes()
    (c.state_dir / MARKER).unlink()
    (c.state_dir / "pki" / "ca.key.expected").unlink()
    mark = c.mark()
    c.start_daemon()
    started(c, mark)  # the members kept running: healthy at once, the daemon is what matters
    assert [e["how"] for e in c.events("state_dir_adopted", since=mark)] == ["earlier-ckeetcd"]
    assert (c.state_dir / MARKER).is_file()
    assert (c.state_dir / "pki" / "ca.crt").read_bytes() == ca


# ---- unusable state dirs: an error naming the path, never a traceback -------------------

COMMANDS = [["run"], ["status"], ["status", "--output", "json"], ["plan"], ["history"],
            ["pause"], ["resume"], ["ca", "export", "--out", "OUT"], ["ca", "import", "BUNDLE"],
            ["stop-members"], ["etcd", "root-issue"], ["etcd", "issue", "app"],
            ["etcd", "local-backup"]]


def write_config(root: Path, state_dir: str) -> Path:
    cfg = root / "ckeetcd.toml"
    cfg.write_text(f'[cluster]\nname = "c"\nstate_dir = "{state_dir}"\n\n'
                   '[[members]]\nname = "m1"\naddress = "127.0.0.77"\n')
    return cfg


def run_cli(args: list[str], cfg: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main([*args, "--config", str(cfg), "--log-format", "json"])
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def bundle_for(root: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A valid CA bundle of cluster "c", from a state dir of its own."""
    other = root / "other"
    other.mkdir()
    cfg = write_config(other, "state")
    out = root / "bundle.json"
    assert main(["ca", "export", "--out", str(out), "--config", str(cfg)]) == 0
    capsys.readouterr()
    return out


def check_commands(tmp_path: Path, cfg: Path, state: Path, capsys: pytest.CaptureFixture[str],
                   commands: list[list[str]] = COMMANDS) -> None:
    bundle = bundle_for(tmp_path, capsys)
    for args in commands:
        args = [str(tmp_path / "out.json") if a == "OUT" else str(bundle) if a == "BUNDLE"
                else a for a in args]
        code, text = run_cli(args, cfg, capsys)
        assert code in (1, 2), (args, code, text)
        assert "Traceback" not in text, (args, text)
        assert str(state) in text, (args, text)
        assert not (tmp_path / "out.json").exists()


def test_a_state_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "afile"
    f.write_text("x\n")
    cfg = write_config(tmp_path, "afile")
    commands = [a for a in COMMANDS if a[0] not in ("status", "plan", "stop-members")]
    check_commands(tmp_path, cfg, f, capsys, commands)
    assert f.read_text() == "x\n"
    code, text = run_cli(["run"], cfg, capsys)
    assert code == 2 and "exists and is not a folder" in text
    assert '"key": "cluster.state_dir"' in text


def test_a_state_dir_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "afile"
    f.write_text("x\n")
    cfg = write_config(tmp_path, "afile/state")
    commands = [a for a in COMMANDS if a[0] not in ("status", "plan", "stop-members")]
    check_commands(tmp_path, cfg, f / "state", capsys, commands)
    assert f.read_text() == "x\n"
    code, text = run_cli(["run"], cfg, capsys)
    assert code == 2 and "a parent folder in the path is a file" in text


def chattr_works(path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    r = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    return r.returncode == 0


def test_an_immutable_state_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    if not chattr_works(state):
        pytest.skip("chattr +i does not work on this file system (or without root)")
    try:
        cfg = write_config(tmp_path, "state")
        for args in (["run"], ["pause"], ["ca", "export", "--out", str(tmp_path / "o.json")]):
            code, text = run_cli(args, cfg, capsys)
            assert code == 2, (args, text)
            assert "cannot write in it" in text and str(state) in text and "Traceback" not in text
        assert list(state.iterdir()) == []
    finally:
        subprocess.run(["chattr", "-i", str(state)], check=True)


@pytest.mark.parametrize("value", ["/proc/self/ckeetcd", "/sys/ckeetcd", "st\\u0000ate"])
def test_run_refuses_proc_and_nul_as_a_config_error(value: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, value)
    code, text = run_cli(["run"], cfg, capsys)
    assert code == 2, text
    assert f"{cfg}: cluster.state_dir: " in text and "Traceback" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckeetcd.toml"]


def test_load_config_keeps_the_state_dir_as_written(tmp_path: Path) -> None:
    """Only the check folds `..`: the path used is the one the kernel resolves."""
    cfg = write_config(tmp_path, "a/../state")
    assert load_config(cfg).cluster.state_dir == tmp_path / "a/../state"


def test_run_refuses_a_shared_folder_before_anything_starts(tmp_path: Path) -> None:
    """`run` on a foreign folder, as a subprocess: exit 2, the folder as it was."""
    state = tmp_path / "shared"
    before = shared_folder(state)
    cfg = write_config(tmp_path, "shared")
    p = subprocess.Popen([sys.executable, "-m", "ckeetcd.cli.main", "run", "--config", str(cfg),
                          "--log-format", "json"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 2, out
    assert snapshot(state) == before
    assert '"event": "state_dir_refused"' in out

"""Property test of every command's argument parsing, in-process via ckeetcd.cli.main.

Issue 11, "What must be shown": hypothesis over argument strings (bytes that
are not UTF-8 as surrogate escapes, newlines, NUL, escape sequences, huge
values, negative numbers, odd durations such as `-ttl=1e999h`), in GNU and Go
style, for every command `ckeetcd --help` lists. Each run must end in:

- exit 2 with a message that names the argument (or argparse's own words for
  an unknown or missing one), printable on one line per message;
- or, for arguments that are fine, the command's own outcome: 0, or the
  documented failure of that command here: there is no CA in the state dir,
  so commands that sign or talk to etcd exit 1 ("...ca.crt: no such file"),
  and `restore` refuses with 2 ("nothing was changed");
- never a traceback (an exception fails the test), never a write: the folder
  holding the config, the state dir and the current directory is compared
  before and after.

Commands whose valid use writes (run, pause, ca export) only get argument
lists with at least one argument that must be refused, and must exit 2.
stdout is strict UTF-8 as on a UTF-8 terminal (printing an undecodable
argument back would raise), stderr backslash-escapes as Python's does.
Deterministic (derandomize, no database); no etcd is started.
"""

from __future__ import annotations

import io
import re
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckeetcd.cli.main import ckecli_main, main
from ckeetcd.core.textcheck import refused_char
from tests.hypothesis_tiers import examples

FUZZ = settings(max_examples=examples(80), derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    positionals: tuple[str, ...] = ()  # metavars
    options: tuple[str, ...] = ()  # options that take a value
    flags: tuple[str, ...] = ()  # options that take none
    writes: bool = False  # a valid use writes: fuzz only with a refused argument
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)


COMMON = ("--config", "--log-format")
COMMANDS = [
    Command(("run",), writes=True),
    Command(("check-config",)),
    Command(("plan",), options=("--output",), choices={"--output": ("table", "json")}),
    Command(("status",), options=("--output",), choices={"--output": ("table", "json")}),
    Command(("history",), options=("-n", "--output"), choices={"--output": ("table", "json")}),
    Command(("pause",), options=("--reason",), writes=True),
    Command(("resume",)),
    Command(("restore",), options=("--from",), flags=("--yes", "--force")),
    Command(("stop-members",)),
    Command(("ca", "export"), options=("--out",), flags=("--no-key",), writes=True),
    Command(("ca", "import"), positionals=("FILE",), flags=("--force",)),
    Command(("ca", "rotate"), flags=("--peer", "--client"), writes=True),
    Command(("etcd", "root-issue"), options=("--output",), choices={"--output": ("json", "file")}),
    Command(("etcd", "issue"), positionals=("USER",), options=("--ttl", "--output"),
            choices={"--output": ("json", "file")}),
    Command(("etcd", "user-add"), positionals=("USER", "PREFIX")),
    Command(("etcd", "user-remove"), positionals=("USER",)),
    Command(("etcd", "local-backup"), options=("--dir", "--max-backups")),
]

# ---- argument strings -------------------------------------------------------------------
UNDECODABLE = st.binary(min_size=1, max_size=6).map(
    lambda b: b.decode("utf-8", "surrogateescape"))
REFUSED = st.one_of(
    st.builds(lambda a, bad, b: a + bad + b, st.text(max_size=8),
              st.sampled_from(["\n", "\r", "\0", "\t", "\x1b[2J", "\x7f", "\x85", "\u2028",
                               "\u202e", "\ufeff", "\udcff", "\udc80"]), st.text(max_size=8)),
    UNDECODABLE.filter(lambda s: refused_char(s) is not None),
    st.just("root\n"), st.just("/a\udcff"), st.just("24h\n"),
)
ODD = st.one_of(
    st.text(max_size=12), REFUSED, UNDECODABLE,
    st.sampled_from(["", "-", "--", "-5", "0", "+5", "1", "10", "99999999999999999999",
                     "9" * 5000, "1e999h", "-ttl=1e999h", "-1h", "0s", "87601h", "175201h",
                     "1h", "24h", "2562047h47m16.854775808s", "\uff15", "5_0", " 5", "nan",
                     "root", "kube-apiserver", "app", "a" * 64, "../x", "/", "/registry/",
                     "/ckeetcd/", "/app/", "json", "table", "file", "console", "x" * 100_000]),
)


@st.composite
def parts(draw: Any, cmd: Command, must_refuse: bool) -> list[str]:
    """An argument list for `cmd` (after its words); with `must_refuse`, one argument
    certainly holds a refused character."""
    out: list[str] = []
    names = list(cmd.options) + list(COMMON)
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["option", "option", "positional", "flag", "unknown",
                                     "separator"]))
        if kind == "option":
            name = draw(st.sampled_from(names))
            value = draw(st.one_of(ODD, st.sampled_from(cmd.choices.get(name, ("x",)))))
            out += draw(st.sampled_from([[name, value], [f"{name}={value}"],
                                         [f"{name[1:]}={value}"] if name.startswith("--")
                                         else [name, value]]))
        elif kind == "positional":
            out.append(draw(ODD))
        elif kind == "flag" and cmd.flags:
            out.append(draw(st.sampled_from(cmd.flags)))
        elif kind == "unknown":
            out += draw(st.sampled_from([["--zz"], ["-zz=1"], ["--zz", "1"], ["-q"]]))
        elif kind == "separator":
            out.append("--")
    if must_refuse:
        bad = draw(REFUSED)
        slot = draw(st.sampled_from([*names, "positional"]))
        out += [bad] if slot == "positional" else [f"{slot}={bad}"]
    return draw(st.permutations(out)) if len(out) < 8 else out


# ---- running a command in-process -----------------------------------------------------------
def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", newline="")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace",
                           newline="")
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = ckecli_main(argv) if argv[0] == "etcd" else main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out.flush()
    err.flush()
    return code, out.buffer.getvalue().decode(), err.buffer.getvalue().decode()


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root`; files with size and mtime, folders by name only
    (local-backup probes a folder's writability with a file it removes at once)."""
    return {str(p.relative_to(root)): (0, 0) if p.is_dir() else
            (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A valid config whose state dir is empty (no CA) and whose members nobody serves;
    the current directory is the same folder, so `-output=file` would land in it."""
    (tmp_path / "state").mkdir()
    (tmp_path / "backups").mkdir()
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "ckeetcd.toml").write_text(
        '[cluster]\nname = "fuzz"\nstate_dir = "state"\n\n'
        '[daemon]\nrpc_timeout = 0.05\n\n[backup]\ndir = "backups"\n\n'
        '[[members]]\nname = "m1"\naddress = "127.250.0.1"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CKEETCD_CONFIG", raising=False)
    return tmp_path


ARGPARSE_WORDS = ("unrecognized arguments", "the following arguments are required",
                  "argument ", "invalid choice", "expected one argument", "ambiguous option",
                  "one of the arguments")


def check(cmd: Command, argv: list[str], code: int, out: str, err: str, workdir: Path) -> None:
    asked_help = any(a in ("-h", "--help") or (a.startswith("--h") and "--help".startswith(a))
                     for a in argv)
    assert code in (0, 1, 2), (argv, code, err)
    for line in err.splitlines():
        assert line.isprintable(), (argv, line[:300])
        assert len(line) < 4000, (argv, line[:300])
    if code == 0:
        assert not cmd.writes or asked_help, (argv, out)
    elif code == 1:
        assert err.startswith("error: ") or "\nerror: " in err, (argv, err)
        if cmd.words[0] == "etcd" or cmd.words == ("ca", "export"):
            assert "ca.crt: no such file" in err, (argv, err)
    else:
        names = (*cmd.positionals, *cmd.options, *(o[1:] for o in cmd.options), *cmd.flags,
                 *COMMON, *(o[1:] for o in COMMON), "$CKEETCD_CONFIG", *ARGPARSE_WORDS)
        restore_refusal = cmd.words == ("restore",) and "nothing was changed" in err
        # a config problem (--config named a file that is missing, or not a config)
        config_problem = re.search(r"^error: .+: (-|[a-z_.\[\]0-9]+): ", err, re.M)
        named = any(f"{n}: " in err or (n in ARGPARSE_WORDS and n in err) for n in names)
        assert restore_refusal or config_problem or named or "argument " in err, (argv, err)
        assert "Traceback" not in err


@pytest.mark.parametrize("cmd", COMMANDS, ids=[" ".join(c.words) for c in COMMANDS])
def test_every_command_refuses_bad_arguments_cleanly(workdir: Path, cmd: Command) -> None:
    config = str(workdir / "ckeetcd.toml")

    @FUZZ
    @given(args=parts(cmd, must_refuse=cmd.writes))
    def one(args: list[str]) -> None:
        before = tree(workdir)
        argv = [*cmd.words, "--config", config, *args]
        code, out, err = run_cli(argv)
        check(cmd, argv, code, out, err, workdir)
        assert tree(workdir) == before, (argv, "wrote something")
        assert Path.cwd() == workdir

    one()


@pytest.mark.parametrize("cmd", COMMANDS, ids=[" ".join(c.words) for c in COMMANDS])
def test_a_refused_argument_always_exits_2(workdir: Path, cmd: Command) -> None:
    """Whatever else is on the line, one argument with a control character or bytes that
    are not UTF-8 means exit 2 and nothing done (help aside)."""
    config = str(workdir / "ckeetcd.toml")

    @FUZZ
    @given(args=parts(cmd, must_refuse=True))
    def one(args: list[str]) -> None:
        before = tree(workdir)
        argv = [*cmd.words, "--config", config, *args]
        code, out, err = run_cli(argv)
        asked_help = any(a in ("-h", "--help") for a in args)
        assert code == 2 or (asked_help and code == 0), (argv, code, out, err)
        check(cmd, argv, code, out, err, workdir)
        assert tree(workdir) == before, (argv, "wrote something")

    one()


@pytest.mark.parametrize(("argv", "names"), [
    (["etcd", "user-add", "USER", "/a\udcff"], "PREFIX: '/a\\udcff' is not valid UTF-8"),
    (["etcd", "issue", "root\n"], "USER: 'root\\n' must not contain control characters"),
    (["etcd", "issue", "-ttl=1e999h", "app"], '-ttl: invalid duration "1e999h"'),
    (["etcd", "issue", "--ttl", "24h\x1b[2J", "app"], "--ttl: '24h\\x1b[2J'"),
    (["etcd", "local-backup", "-max-backups=\uff15"], "-max-backups: '\uff15' is not an integer"),
    (["etcd", "local-backup", "-max-backups=10001"], "-max-backups: must be between 1 and 10000"),
    (["history", "-n", "5\n"], "argument -n: must be a whole number"),
    (["pause", "--reason", "a\nb"], "--reason: 'a\\nb' must not contain control characters"),
    (["restore", "--from", "/tmp/\0x"], "--from: '/tmp/\\x00x'"),
    (["ca", "import", "\udcff.json"], "FILE: '\\udcff.json' is not valid UTF-8"),
    (["ca", "export", "--out", "x\ny"], "--out: 'x\\ny'"),
    (["etcd", "user-add", "kube-apiserver", "/other/"], "USER: 'kube-apiserver' is managed"),
    (["etcd", "user-add", "app", "x" * 100_000], "characters)"),
    (["status", "--output", "j" * 100_000], "characters) (choose from"),
])
def test_named_cases(workdir: Path, argv: list[str], names: str) -> None:
    """The cases of issue 11 (items 4, 6, 11) one by one."""
    before = tree(workdir)
    code, _, err = run_cli([*argv, "--config", str(workdir / "ckeetcd.toml")])
    assert code == 2, err
    assert names in err, err
    assert len(err) < 2000, err[:2000]
    assert tree(workdir) == before


def test_the_command_list_is_complete() -> None:
    """Every command `ckeetcd --help` (and its groups) lists is fuzzed above."""
    import argparse

    from ckeetcd.cli.main import build_parser

    def leaves(p: argparse.ArgumentParser, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [path]
        return [leaf for name, sp in subs[0].choices.items() for leaf in leaves(sp, (*path, name))]

    assert sorted(leaves(build_parser(), ())) == sorted(c.words for c in COMMANDS)

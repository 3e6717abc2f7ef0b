"""Run a `ckeetcd` or `ckecli` command in the test's own process, as a subprocess would see it.

A fresh `python -m ckeetcd.cli.main` costs 0.2-0.5 s of CPU, mostly imports;
the fast tier ran hundreds. `run_cli` calls the console scripts' entry points
(`ckeetcd.cli.main.main`, `ckecli_main`) with the given environment, current
directory and stdin, and returns a CompletedProcess with the exit status and
what went to stdout and stderr (strict UTF-8 out, backslash-escaped err, as on
a UTF-8 terminal). Everything it changes is put back: os.environ, the current
directory, sys.std*, the structlog configuration. An exception escaping the
command (a traceback in a real process) propagates and fails the test.

What it cannot show, and real subprocesses still do (the `ckecli` shell
pipelines of tests/test_certs_cli.py, `run` in tests/test_statedir.py, the
daemons and CLIs of the etcd tier): the console-script wiring, fd 2 rewiring
of JSON logs (`capture_native_stderr`), signals, dropped capabilities.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import structlog

from ckeetcd.cli.main import ckecli_main, main
from ckeetcd.support import logs


@contextmanager
def _process_state(env: Mapping[str, str] | None, cwd: Path | None) -> Iterator[None]:
    """os.environ (replaced by `env` when given) and the current directory, put back after."""
    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    saved_log = (structlog.get_config(), dict(logs._settings), logs._configured)
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        structlog.configure(**saved_log[0])
        logs._settings.update(saved_log[1])
        logs._configured = saved_log[2]


def run_cli(prog: str, *args: str, env: Mapping[str, str] | None = None,
            cwd: Path | None = None, input: str = "") -> subprocess.CompletedProcess[str]:
    """`prog ARGS` ("ckeetcd" or "ckecli") in-process; `env` replaces the environment
    like subprocess.run's."""
    entry = {"ckeetcd": main, "ckecli": ckecli_main}[prog]
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", newline="")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace",
                           newline="")
    saved = sys.stdin, sys.stdout, sys.stderr
    with _process_state(env, cwd):
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(input), out, err
        try:
            code = entry(list(args))
        except SystemExit as e:  # as the interpreter ends: a message goes to stderr, status 1
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                print(e.code, file=err)
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
    out.flush()
    err.flush()
    return subprocess.CompletedProcess([prog, *args], code, out.buffer.getvalue().decode(),
                                       err.buffer.getvalue().decode())

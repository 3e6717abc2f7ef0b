"""Ask the local etcd binary which `[etcd] extra_args` it accepts, without starting it.

Go's flag package parses the whole command line before etcd does anything
else, and stops at the first flag it does not know. So

    etcd ARG --ckeetcd-probe-1 --ckeetcd-probe-2

always ends at parsing, and says which: "flag provided but not defined:
-ckeetcd-probe-1" when ARG is fine; "-ckeetcd-probe-2" when ARG is a flag that
took the next item as its value (it needs `--flag=VALUE`); etcd's own message
otherwise (an unknown flag, a value it cannot parse). This asks the very
binary members will run, so it knows that binary's flags (3.4, 3.5, ...)
better than any list could; `--help` would only show the documented ones.

One run per argument, plus one without (does the binary answer like etcd at
all?), each with a short deadline, no stdin, a clean environment and at most
64 KiB of output read; results are cached per binary (path, inode, size,
mtime) and argument, so a reload re-runs nothing. Members over SSH run the
binary of their node, which is not probed here: they get the static checks
of ckeetcd.core.config only.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import time
from pathlib import Path

from ckeetcd.core.config import Config, Problem
from ckeetcd.core.textcheck import printable
from ckeetcd.nodes.local import resolve_etcd_binary

SENTINELS = ("--ckeetcd-probe-1", "--ckeetcd-probe-2")
TIMEOUT = 5.0
OUTPUT_LIMIT = 64 * 1024
_UNKNOWN = "flag provided but not defined: -"

BinaryId = tuple[str, int, int, int, int]
_cache: dict[tuple[BinaryId, str | None], str | None] = {}


def interpret(output: str, arg: str | None) -> str | None:
    """Why `arg` is refused, from etcd's answer to `etcd ARG SENTINELS`; None when fine.

    `arg` None: the run without arguments, which tells whether this is etcd.
    Pure, so it is table-tested on etcd's real messages.
    """
    first = next((line.strip() for line in output.splitlines() if line.strip()), "")
    if first == _UNKNOWN + SENTINELS[0][2:]:
        # etcd prints its usage after the error (3.4 to 3.6: "etcd [flags]").
        return None if arg is not None or "etcd [flags]" in output else \
            "answers like a Go program but not like etcd (no \"etcd [flags]\" usage)"
    if arg is None:
        return f"does not answer like etcd (asked with an unknown flag, it said: " \
               f"{printable(first[:200]) or 'nothing'})"
    if first == _UNKNOWN + SENTINELS[1][2:]:
        return f"{arg.split('=')[0]} needs a value: write {arg.split('=')[0]}=VALUE"
    if first.startswith(_UNKNOWN):
        return f"etcd does not know {arg.split('=')[0]} ({printable(first[:200])})"
    return f"etcd refuses it: {printable(first[:200]) or 'no answer'}"


def problems(config: Config) -> list[Problem]:
    """What the local etcd binary says about the config's extra_args (and about
    itself); [] when no member runs on this machine."""
    if not any(m.runtime == "local" for m in config.members):
        return []
    file = str(config.path)
    try:
        binary = resolve_etcd_binary(config.etcd.binary)
    except FileNotFoundError as e:
        return [Problem(file, "etcd.binary", str(e))]
    found = binary if "/" in binary else shutil.which(binary)
    if not found:
        return [Problem(file, "etcd.binary", f"{binary!r} is not on PATH")]
    try:
        st = Path(found).stat()
    except OSError as e:
        return [Problem(file, "etcd.binary", f"{found}: {e.strerror or e}")]
    ident: BinaryId = (found, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    why = _verdict(ident, None)
    if why:
        return [Problem(file, "etcd.binary", f"{found} {why}")]
    out = []
    for i, arg in enumerate(config.etcd.extra_args):
        why = _verdict(ident, arg)
        if why:
            out.append(Problem(file, f"etcd.extra_args[{i}]", f"{why} (asked {found})"))
    return out


def _verdict(ident: BinaryId, arg: str | None) -> str | None:
    key = (ident, arg)
    if key not in _cache:
        try:
            output = ask(ident[0], [] if arg is None else [arg])
        except OSError as e:
            return f"cannot be run: {e.strerror or e}"  # not cached: may be fixed any time
        _cache[key] = interpret(output, arg)
    return _cache[key]


def ask(binary: str, args: list[str]) -> str:
    """The first OUTPUT_LIMIT bytes `binary ARGS SENTINELS` prints (stdout and stderr)
    within TIMEOUT; the process is killed if it is still running then."""
    proc = subprocess.Popen([binary, *args, *SENTINELS], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/",
                            env={"PATH": os.environ.get("PATH", os.defpath)},
                            start_new_session=True)
    assert proc.stdout is not None
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + TIMEOUT
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while size < OUTPUT_LIMIT:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    break
                chunk = os.read(proc.stdout.fileno(), OUTPUT_LIMIT - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    finally:
        if proc.poll() is None:
            proc.kill()  # the process we started, by its PID
        proc.wait()
        proc.stdout.close()
    return b"".join(chunks).decode("utf-8", "replace")

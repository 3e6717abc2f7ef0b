"""Taking the state dir: create it, or use it only when it is ours.

A typo in `[cluster] state_dir` must never harm a machine: config
validation refuses system folders (ckeetcd.core.syspaths), and here, before
anything is written, an existing folder is used only when it is ours:

- it carries the marker `.ckeetcd-state` (written when ckeetcd creates or
  adopts a state dir);
- or it is empty (apart from `lost+found`: a file system of its own);
- or an earlier ckeetcd made it (`pki/ca.crt`, `members/`, `history.jsonl`,
  `cluster-formed.json`): the upgrade path, it gets the marker;
- or the operator said so: `[cluster] adopt_state_dir = true`.

Anything else (a non-empty folder of someone else's, a file, a folder that
cannot be written) is refused with an error that names the path and says
what to do; nothing is changed. Modes: a folder ckeetcd created is 0700 and
is set back to 0700 (with a warning) when found open to others; a folder it
adopted is never chmod-ed, only warned about.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckeetcd.core.syspaths import character_problem, system_dir_problem
from ckeetcd.support.files import ensure_private_dir, write_private

MARKER = ".ckeetcd-state"
MARKER_FORMAT = "ckeetcd-state/1"
# What a state dir made by an earlier ckeetcd (no marker yet) holds.
EARLIER_SIGNS = ("pki/ca.crt", "members", "history.jsonl", "cluster-formed.json")
IGNORED = frozenset({"lost+found"})
ADOPT_KEY = "adopt_state_dir"


class StateDirError(Exception):
    """The state dir cannot be used; nothing was changed (the message says why and what to
    do)."""


@dataclass(frozen=True)
class Facts:
    """What was found at the state dir path (gathered by `look`)."""

    exists: bool
    is_dir: bool = True
    entries: tuple[str, ...] = ()  # top-level names, IGNORED left out
    marker: dict[str, Any] | None = None  # the parsed marker (an unreadable one: {})
    earlier: tuple[str, ...] = ()  # EARLIER_SIGNS present
    mode: int = 0o700
    owned: bool = True  # owned by the user this process runs as


@dataclass(frozen=True)
class Verdict:
    """What to do with the state dir: `action` is "create", "use" or "adopt"; `refusal`
    (non-empty) means: touch nothing."""

    action: str
    how: str = ""  # why it is ours: created, marker, empty, earlier-ckeetcd, adopt_state_dir
    refusal: str = ""
    fix_mode: bool = False  # chmod 0700 (only a folder ckeetcd created)
    open_mode: bool = False  # group/others have access


def verdict(f: Facts, adopt: bool) -> Verdict:
    """Whether and how the state dir may be used (pure; table-tested)."""
    if not f.exists:
        return Verdict("create", "created")
    if not f.is_dir:
        return Verdict("use", refusal="exists and is not a folder")
    open_mode = bool(f.mode & 0o077)
    if f.marker is not None:
        created = bool(f.marker.get("created"))
        return Verdict("use", "marker", fix_mode=open_mode and created and f.owned,
                       open_mode=open_mode)
    if not f.entries:
        return Verdict("adopt", "empty", open_mode=open_mode)
    if f.earlier:
        return Verdict("adopt", "earlier-ckeetcd", open_mode=open_mode)
    if adopt:
        return Verdict("adopt", ADOPT_KEY, open_mode=open_mode)
    shown = ", ".join(sorted(f.entries)[:5]) + (", ..." if len(f.entries) > 5 else "")
    return Verdict("use", refusal=(
        f"exists, is not empty ({shown}) and was not made by ckeetcd (no {MARKER} marker); "
        "ckeetcd would fill it with its own files and make them private. Choose an empty or "
        f"new folder, or set {ADOPT_KEY} = true under [cluster] to use this one anyway "
        f"(ckeetcd then writes {MARKER} there and never asks again)"))


def look(path: Path) -> Facts:
    """The facts at `path`; StateDirError when it cannot even be looked at."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return Facts(exists=False)
    except NotADirectoryError:
        raise StateDirError("a parent folder in the path is a file, not a folder") from None
    except OSError as e:
        raise StateDirError(f"cannot look at it: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        return Facts(exists=True, is_dir=False)
    try:
        names = tuple(p.name for p in path.iterdir() if p.name not in IGNORED)
    except OSError as e:
        raise StateDirError(f"cannot list it: {e.strerror or e}") from None
    marker: dict[str, Any] | None = None
    if MARKER in names:
        try:
            raw = json.loads((path / MARKER).read_text())
            marker = raw if isinstance(raw, dict) else {}
        except (OSError, ValueError):
            marker = {}  # ours all the same: nobody else writes this name
    earlier = tuple(s for s in EARLIER_SIGNS if os.path.lexists(path / s))
    return Facts(exists=True, entries=names, marker=marker, earlier=earlier,
                 mode=stat.S_IMODE(st.st_mode), owned=st.st_uid == os.geteuid())


@dataclass(frozen=True)
class Claim:
    """The state dir is ours; `notes` are (level, event, fields) to log."""

    path: Path
    how: str
    notes: tuple[tuple[str, str, dict[str, Any]], ...] = ()


def claim_state_dir(path: Path, cluster: str, adopt: bool = False) -> Claim:
    """Create the state dir, or check that an existing one is ours (see the module doc);
    StateDirError, with nothing changed, when it may not be used."""
    problem = character_problem(str(path))
    if not problem:
        real = os.path.realpath(path)
        home = os.path.expanduser("~")  # noqa: PTH111 (this one never raises)
        problem = system_dir_problem(real, (home,))
        if problem and real != str(path):
            problem = f"resolves to {real}: {problem}"
    if problem:
        raise StateDirError(problem)
    facts = look(path)
    v = verdict(facts, adopt)
    if v.refusal:
        raise StateDirError(v.refusal)
    notes: list[tuple[str, str, dict[str, Any]]] = []
    if v.action == "create":
        try:
            ensure_private_dir(path)
        except OSError as e:
            raise StateDirError(f"cannot create it: {e.strerror or e}") from None
        notes.append(("info", "state_dir_created", {"state_dir": str(path), "mode": "0700"}))
    _check_writable(path)
    if v.action in ("create", "adopt"):
        _write_marker(path, cluster, created=v.action == "create", how=v.how)
        if v.action == "adopt":
            notes.append(("warning" if v.how == ADOPT_KEY else "info", "state_dir_adopted",
                          {"state_dir": str(path), "how": v.how}))
    mode = f"{facts.mode:04o}"
    if v.fix_mode:
        try:
            path.chmod(0o700)
            notes.append(("warning", "state_dir_mode_fixed",
                          {"state_dir": str(path), "old_mode": mode, "mode": "0700"}))
        except OSError as e:
            notes.append(("error", "state_dir_mode_open",
                          {"state_dir": str(path), "mode": mode, "error": e.strerror or str(e)}))
    elif v.open_mode:
        notes.append(("warning", "state_dir_mode_open", {
            "state_dir": str(path), "mode": mode,
            "hint": f"others may look into it; ckeetcd did not create it, so it leaves the mode "
                    f"alone: chmod 700 {path}"}))
    return Claim(path, v.how, tuple(notes))


def _check_writable(path: Path) -> None:
    """A read-only file system or an immutable folder fails here, before any real write."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".ckeetcd-probe.")
        os.close(fd)
        Path(tmp).unlink()
    except OSError as e:
        hint = " (immutable? see `lsattr -d`)" if e.errno == errno.EPERM else ""
        raise StateDirError(f"cannot write in it: {e.strerror or e}{hint}") from None


def _write_marker(path: Path, cluster: str, created: bool, how: str) -> None:
    body = {"format": MARKER_FORMAT, "cluster": cluster, "created": created, "how": how,
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        write_private(path / MARKER, (json.dumps(body) + "\n").encode())
    except OSError as e:
        raise StateDirError(f"cannot write {MARKER} in it: {e.strerror or e}") from None


def is_ours(path: Path) -> bool:
    """Whether `path` carries the marker (read-only commands use it to stay out of
    folders that are not a state dir)."""
    return (path / MARKER).is_file()

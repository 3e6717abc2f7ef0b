"""Folders a state dir must never be: a pure path check, no I/O.

ckeetcd makes its state dir private and fills it with `pki/`, `members/`,
`daemon.lock`, `history.jsonl`... A typo such as `state_dir = "/"` or
`"/tmp"` must never take over a folder the machine or other users share, so
config validation refuses these (lexically: `..` and repeated slashes are
folded first), and `ckeetcd run` checks again after resolving symlinks.
"""

from __future__ import annotations

import posixpath

from ckeetcd.core.textcheck import refused_char

# The file system hierarchy's shared folders (FHS 3.0 and what distributions add).
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/lost+found", "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/snap",
    "/srv", "/sys", "/tmp", "/usr", "/var",
    "/etc/opt", "/etc/systemd", "/etc/ssl",
    "/run/lock", "/run/user", "/dev/shm",
    "/usr/bin", "/usr/include", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libexec",
    "/usr/local", "/usr/local/bin", "/usr/local/etc", "/usr/local/lib", "/usr/local/sbin",
    "/usr/local/share", "/usr/sbin", "/usr/share", "/usr/src",
    "/var/backups", "/var/cache", "/var/crash", "/var/lib", "/var/local", "/var/lock",
    "/var/log", "/var/mail", "/var/opt", "/var/run", "/var/spool", "/var/tmp",
})
# Kernel file systems: nothing under them is a folder to keep data in.
VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")


def normalize(path: str) -> str:
    """`path` with `.`, `..` and repeated slashes folded (lexically, as the kernel
    would for a path without symlinks)."""
    folded = posixpath.normpath(path)
    return "/" + folded.lstrip("/") if folded.startswith("/") else folded


def character_problem(path: str) -> str:
    """Why `path` cannot name a folder safely (NUL, control or format characters, bytes
    that are not UTF-8): the one rule of ckeetcd.core.textcheck, "" when it can."""
    return refused_char(path) or ""


def system_dir_problem(path: str, homes: tuple[str, ...] = ()) -> str:
    """Why `path` (absolute) cannot be a state dir; "" when it can.

    `homes` are home folders to refuse as well (the user's own, from $HOME);
    every /home/NAME is refused anyway.
    """
    problem = character_problem(path)
    if problem:
        return problem
    if not path.startswith("/"):
        return "must be an absolute path"
    p = normalize(path)
    if p in SYSTEM_DIRS:
        return (f"{p} is a system folder that other programs and users share; ckeetcd "
                "would fill it and make it private: use a folder of its own, e.g. "
                "/var/lib/ckeetcd")
    for root in VIRTUAL_ROOTS:
        if p.startswith(root + "/"):
            return f"{p} is on the kernel's {root} file system, which cannot keep data"
    own = {normalize(h) for h in homes if h.startswith("/")}
    if p in own or posixpath.dirname(p) == "/home":
        return (f"{p} is a home folder; ckeetcd would fill it and make it private: use a "
                "folder of its own inside it, e.g. ~/.ckeetcd")
    return ""

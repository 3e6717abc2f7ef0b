"""A member's fingerprint at its start, and what a restart would give it (rolling changes).

The node runtime records, in the member's pidfile, the command line it ran
(binary and flags) and the version that binary's `--version` said. At each
inspection it compares the recorded flags with those a restart would use
(ckeetcd.core.memberchange), and says which version the configured binary
is, so the decision knows which members need a restart and why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ckeetcd.core.config import EtcdConfig
from ckeetcd.core.etcdversions import binary_version
from ckeetcd.core.memberchange import flag_diff, restart_flags
from ckeetcd.core.peercn import FLAG as CN_FLAG
from ckeetcd.nodes.base import MemberSpec, member_flags

_versions: dict[tuple[str, int, int, int, int], str] = {}


def version_of(binary: str) -> str:
    """The version `binary --version` prints ("" when it cannot be run or says none);
    asked once per file identity (path, device, inode, size, mtime)."""
    try:
        st = Path(binary).stat()
    except OSError:
        return ""
    key = (binary, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _versions:
        from ckeetcd.nodes.etcdprobe import ask  # etcdprobe imports the local runtime

        try:
            v = binary_version(ask(binary, ["--version"], sentinels=False))
        except OSError:
            return ""
        _versions[key] = str(v) if v else ""
    return _versions[key]


def wanted_flags(name: str, data_dir: Path, tls_dir: Path, etcd: EtcdConfig) -> tuple[str, ...]:
    """The restart-relevant flags a start of `name` would use now."""
    spec = MemberSpec(name=name, client_url="", peer_url="", cluster_token="",
                      initial_cluster=(), initial_state="existing")
    return restart_flags(member_flags(spec, data_dir, tls_dir, etcd))


def change_since_start(recorded_cmd: object, wanted: tuple[str, ...]) -> tuple[str, ...]:
    """flag_diff between the recorded command line (binary first) and `wanted`;
    () when nothing usable was recorded (a member started before this existed
    counts as current until its next start)."""
    if not isinstance(recorded_cmd, list) or len(recorded_cmd) < 2:
        return ()
    return flag_diff(restart_flags([str(a) for a in recorded_cmd[1:]]), wanted)


TRUST_FLAGS = {"--trusted-ca-file": "client", "--peer-trusted-ca-file": "peer"}


def trust_files(recorded_cmd: object) -> tuple[tuple[str, str], ...]:
    """(role, file name) of the trusted-CA flags of a recorded command line: which bundle
    the process loaded (ckeetcd.core.carotation.trust_of reads it)."""
    if not isinstance(recorded_cmd, list):
        return ()
    out = []
    for arg in recorded_cmd[1:]:
        key, _, value = str(arg).partition("=")
        if key in TRUST_FLAGS and value:
            out.append((TRUST_FLAGS[key], Path(value).name))
    return tuple(sorted(out))


def allowed_cn(recorded_cmd: object) -> str | None:
    """The --peer-cert-allowed-cn of a recorded command line ("" none; None: no record)."""
    if not isinstance(recorded_cmd, list) or len(recorded_cmd) < 2:
        return None
    values = [v for a in recorded_cmd[1:] for k, _, v in [str(a).partition("=")] if k == CN_FLAG]
    return values[-1] if values else ""  # Go's flag package keeps the last


def restart_change(recorded_cmd: object, wanted: tuple[str, ...], version: str,
                   problem: str = "") -> dict[str, Any]:
    """Runtime's `wanted_version`, `flag_change`, `trust_files`, `allowed_cn` and
    `change_unknown` (the same for every node runtime): an unknown version is said,
    never taken for "no change"."""
    return {"wanted_version": version, "flag_change": change_since_start(recorded_cmd, wanted),
            "trust_files": trust_files(recorded_cmd), "allowed_cn": allowed_cn(recorded_cmd),
            "change_unknown": "" if version else
            (problem or "the etcd binary a restart would run names no etcd version")}


def running_change(name: str, pidfile: Path, data_dir: Path, tls_dir: Path, etcd: EtcdConfig,
                   binary: str) -> dict[str, Any]:
    """What a restart would change for a running member whose start left `pidfile`:
    Runtime's `wanted_version`, `flag_change`, `change_unknown` ({} when unknown)."""
    try:
        version = version_of(binary)
        cmd = json.loads(pidfile.read_text()).get("cmd")
    except (OSError, ValueError, AttributeError):
        return {}
    return restart_change(cmd, wanted_flags(name, data_dir, tls_dir, etcd), version,
                          "" if version else f"`{binary} --version` names no etcd version "
                                             "(missing, not executable, or not etcd)")


def disk_free(path: Path) -> int | None:
    """Bytes free (for unprivileged writers) on the filesystem of `path`; None: unknown."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize

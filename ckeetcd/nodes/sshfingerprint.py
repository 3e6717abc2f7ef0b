"""What a restart would change for a member on another node (rolling changes over SSH).

The same question as ckeetcd.nodes.fingerprint answers for local members,
asked over the node's SSH connection: the start command line recorded beside
the member (`etcd.cmd` in process mode, the unit's EnvironmentFile with
systemd) against the flags a restart would use, and the version the node's
etcd binary says. Both ride along with the inspection's own SSH command: a
`stat` of the binary every time, and `<binary> --version` (at most 10 s) only
when that identity (path, inode, size, mtime, ctime) is not the one asked
already, so a daemon asks once per binary and a CLI run once per node, never
in a second round trip. A binary that is missing, fails or names no version
is never taken for "no change": the member's Runtime says why
(`change_unknown`, which holds a rolling change) and the log says it once
(`etcd_binary_problem`).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from ckeetcd.core.config import EtcdConfig
from ckeetcd.core.etcdversions import binary_version
from ckeetcd.nodes.fingerprint import restart_change, wanted_flags

CMD_RECORD = "etcd.cmd"  # JSON list: the command line of the member's last start
SECTION = "@@ckeetcd-"  # starts the lines that separate the parts of an inspection's output
RECORD_LIMIT = 65536  # bytes of a record read back (a command line is far smaller)


def record_script(cmd: list[str]) -> str:
    """Shell lines that write the start record of `cmd` into the member dir $d."""
    body = shlex.quote(json.dumps(cmd))
    return (f"printf '%s\\n' {body} > \"$d/{CMD_RECORD}.tmp\"; "
            f"mv -f \"$d/{CMD_RECORD}.tmp\" \"$d/{CMD_RECORD}\"\n")


def probe_script(record: str, binary: str, known: str, version_timeout: int = 10) -> str:
    """Shell lines that print the start record (a path), the binary's identity and,
    unless that identity is `known`, what `binary --version` says (within
    `version_timeout` seconds) and its exit status."""
    b = shlex.quote(binary)
    return (f"echo '{SECTION}record'; head -c {RECORD_LIMIT} {shlex.quote(record)} "
            f"2>/dev/null; echo; echo '{SECTION}binary'\n"
            f"if id=$(stat -L -c '%i %s %.9Y %.9Z' {b} 2>&1); then echo \"$id\"\n"
            f"  if [ \"$id\" != {shlex.quote(known)} ]; then echo '{SECTION}version'\n"
            f"    out=$(timeout {version_timeout} {b} --version 2>&1); st=$?; "
            f"printf '%s\\n' \"$out\" | head -c {RECORD_LIMIT}; echo; "
            f"echo \"{SECTION}exit $st\"; fi\n"
            "else echo \"$id\" | head -n 1; fi\n")


def split_probe(text: str) -> tuple[str, str, str, str | None]:
    """(what came before, the record's text, the binary's stat line, what `--version`
    printed with its exit status on the last line, or None when it was not asked)."""
    head, _, rest = text.partition(f"{SECTION}record\n")
    record, _, binary = rest.partition(f"{SECTION}binary\n")
    identity, asked, answer = binary.partition(f"{SECTION}version\n")
    return head, record.strip(), identity.strip(), answer if asked else None


def recorded_cmd(record: str, env_file: bool) -> list[str] | None:
    """The command line a record holds: JSON (process mode) or the EnvironmentFile's
    CKEETCD_ETCD_BINARY and CKEETCD_ETCD_FLAGS (no spaces inside a flag there)."""
    if not env_file:
        try:
            cmd = json.loads(record)
        except ValueError:
            return None
        return [str(a) for a in cmd] if isinstance(cmd, list) else None
    env = dict(line.split("=", 1) for line in record.splitlines()
               if "=" in line and not line.startswith("#"))
    binary = env.get("CKEETCD_ETCD_BINARY", "")
    return [binary, *env.get("CKEETCD_ETCD_FLAGS", "").split()] if binary else None


class RemoteFingerprints:
    """Per SSH node: cached binary versions and the problems logged already."""

    def __init__(self, log: Any = None) -> None:
        self.log = log
        # (host, binary) -> (identity, version) of the last good `--version`
        self._versions: dict[tuple[str, str], tuple[str, str]] = {}
        self._said: dict[str, str] = {}  # member -> the problem logged last

    def known(self, host: str, binary: str) -> str:
        """The identity whose version is known (probe_script skips asking it again)."""
        return self._versions.get((host, binary), ("", ""))[0]

    def version(self, host: str, binary: str, identity: str,
                answer: str | None) -> tuple[str, str]:
        """(version, "") of `binary` on `host` from split_probe's parts, or ("", why not)."""
        fields = identity.split()
        if len(fields) != 4 or not all(f.replace(".", "").isdigit() for f in fields):
            return "", f"{binary} on {host}: {identity or 'cannot stat it'}"
        known = self._versions.get((host, binary))
        if answer is None:
            if known is not None and known[0] == identity:
                return known[1], ""
            return "", f"`{binary} --version` on {host} was not asked"  # a race: next time
        out, _, status = answer.rstrip().rpartition(f"{SECTION}exit ")
        if status.strip() != "0":
            tail = out.strip().splitlines()[-1:] or [""]
            return "", (f"`{binary} --version` on {host} exited {status.strip() or '?'}: "
                        f"{tail[0][:200]}")
        v = binary_version(out)
        if v is None:
            return "", f"`{binary} --version` on {host} names no etcd version"
        self._versions[(host, binary)] = (identity, str(v))
        return str(v), ""

    def change(self, host: str, name: str, member_dir: Path, binary: str, etcd: EtcdConfig,
               record: str, identity: str, answer: str | None, env_file: bool,
               running: bool) -> dict[str, Any]:
        """Runtime's wanted_version, flag_change and change_unknown for `name` ({} when
        it is not running: nothing to compare; a version answer is kept all the same)."""
        version, problem = self.version(host, binary, identity, answer)
        if not running:
            return {}
        if problem and self._said.get(name) != problem and self.log is not None:
            self.log.warning("etcd_binary_problem", member=name, host=host,
                             binary=binary, error=problem)
        self._said[name] = problem
        wanted = wanted_flags(name, member_dir / "data", member_dir / "tls", etcd)
        return restart_change(recorded_cmd(record, env_file), wanted, version, problem)

"""What a restart would change for a member on another node (rolling changes over SSH).

The same question as ckeetcd.nodes.fingerprint answers for local members,
asked over the node's SSH connection: the start command line recorded beside
the member (`etcd.cmd` in process mode, the unit's EnvironmentFile with
systemd) against the flags a restart would use, and the version the node's
etcd binary says. `<binary> --version` runs once per binary identity on that
node (path, inode, size, mtime, ctime: one `stat` rides along with every
inspection), not every cycle. A binary that is missing, fails or names no
version is never taken for "no change": the member's Runtime says why
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
from ckeetcd.nodes.sshnode import SSHNode

CMD_RECORD = "etcd.cmd"  # JSON list: the command line of the member's last start
SECTION = "@@ckeetcd-"  # starts the lines that separate the parts of an inspection's output
RECORD_LIMIT = 65536  # bytes of a record read back (a command line is far smaller)


def record_script(cmd: list[str]) -> str:
    """Shell lines that write the start record of `cmd` into the member dir $d."""
    body = shlex.quote(json.dumps(cmd))
    return (f"printf '%s\\n' {body} > \"$d/{CMD_RECORD}.tmp\"; "
            f"mv -f \"$d/{CMD_RECORD}.tmp\" \"$d/{CMD_RECORD}\"\n")


def probe_script(record: str, binary: str) -> str:
    """Shell lines that print the start record (a path) and the binary's identity."""
    return (f"echo '{SECTION}record'; head -c {RECORD_LIMIT} {shlex.quote(record)} "
            f"2>/dev/null; echo; echo '{SECTION}binary'; "
            f"stat -L -c '%i %s %.9Y %.9Z' {shlex.quote(binary)} 2>&1 || true\n")


def split_probe(text: str) -> tuple[str, str, str]:
    """(what came before, the record's text, the binary's stat line) of an output."""
    head, _, rest = text.partition(f"{SECTION}record\n")
    record, _, binary = rest.partition(f"{SECTION}binary\n")
    return head, record.strip(), binary.strip()


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
        self._versions: dict[tuple[str, str, str], str] = {}  # (host, binary, stat) -> version
        self._said: dict[str, str] = {}  # member -> the problem logged last

    async def version(self, node: SSHNode, binary: str, identity: str,
                      timeout: float) -> tuple[str, str]:
        """(version, "") of `binary` on `node`, or ("", why not)."""
        fields = identity.split()
        if len(fields) != 4 or not all(f.replace(".", "").isdigit() for f in fields):
            return "", f"{binary} on {node.host}: {identity or 'cannot stat it'}"
        key = (node.host, binary, identity)
        if key in self._versions:
            return self._versions[key], ""
        r = await node.run(f"{shlex.quote(binary)} --version 2>&1", timeout=timeout,
                           check=False)
        if r.status != 0:
            tail = r.text.strip().splitlines()[-1:] or [""]
            return "", f"`{binary} --version` on {node.host} exited {r.status}: {tail[0][:200]}"
        v = binary_version(r.text)
        if v is None:
            return "", f"`{binary} --version` on {node.host} names no etcd version"
        self._versions[key] = str(v)
        return str(v), ""

    async def change(self, node: SSHNode, name: str, member_dir: Path, binary: str,
                     etcd: EtcdConfig, record: str, identity: str, env_file: bool,
                     timeout: float) -> dict[str, Any]:
        """Runtime's wanted_version, flag_change and change_unknown for running `name`."""
        version, problem = await self.version(node, binary, identity, timeout)
        if problem and self._said.get(name) != problem and self.log is not None:
            self.log.warning("etcd_binary_problem", member=name, host=node.host,
                             binary=binary, error=problem)
        self._said[name] = problem
        wanted = wanted_flags(name, member_dir / "data", member_dir / "tls", etcd)
        return restart_change(recorded_cmd(record, env_file), wanted, version, problem)

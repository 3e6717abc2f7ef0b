"""Members on other nodes, reached over SSH (asyncssh).

Connections are ckeetcd.nodes.sshnode's (strict host keys, key auth only,
deadlines, one per host); a failed one is an `OSError`: an unreachable node.

On the node a member lives in `<data_root>/<name>/` (`data/`, `tls/`,
`etcd.log`, and `etcd.pid` or `etcd.env`) and runs as one of:

- `process`: etcd started with `setsid`, detached from the SSH session, its
  output appended to `etcd.log`; `etcd.pid` holds "PID STARTTIME" (field 22
  of /proc/PID/stat) and a process counts as ours only when both match, as
  with the local runtime: PID reuse never makes us signal a stranger.
- `systemd`: the unit `ckeetcd-member@NAME` (systemd/ckeetcd-member@.service)
  whose command line comes from `/etc/ckeetcd/member-NAME.env`; the daemon
  writes that file, reads it back and compares before every start.

Certificates are pushed with 0600 keys in a 0700 directory; the CA key
never leaves the daemon's host (only `ca.crt` is pushed). Every remote path
comes from validated config (no shell metacharacters) and is quoted anyway.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

from ckeetcd.core.config import EtcdConfig, SSHConfig
from ckeetcd.core.model import MemberExit, Runtime
from ckeetcd.nodes.base import (
    LOG_MAX_BYTES,
    LOG_TAIL_BYTES,
    LOG_TAIL_LINES,
    MARKER_LIMIT,
    RESTORE_BUMP,
    RESTORE_MARKER,
    Archive,
    MemberSpec,
    exit_of,
    is_archive,
    killed_by,
    member_flags,
    prunable,
    restore_bump_flags,
)
from ckeetcd.nodes.sshfingerprint import (
    CMD_RECORD,
    RemoteFingerprints,
    probe_script,
    record_script,
    split_probe,
)
from ckeetcd.nodes.sshnode import SSHError, SSHNode
from ckeetcd.support.polling import Backoff, Poll

UNIT = "ckeetcd-member@{name}.service"
UNIT_START = 10.0  # seconds a unit started with --no-block has to show its etcd running
ENV_DIR = "/etc/ckeetcd"


_PROC_STAT = "sed 's/^.*) //' /proc/$pid/stat 2>/dev/null | cut -d' ' -f1,20"
# Sets $running (0|1) and $pid from the pidfile of the member directory $d.
_RUNNING = f"""
pid=0; running=0
if [ -r "$d/etcd.pid" ] && read pid start < "$d/etcd.pid"; then
  set -- $({_PROC_STAT})
  if [ "${{1:-Z}}" != Z ] && [ "${{2:-}}" = "$start" ]; then running=1; fi
fi
"""
# "<running 0|1> <pid> <has data 0|1>" for the member directory $d.
# The restore marker's note on one line after the rest ("" when there is none).
_READ_MARKER = (f'[ ! -e "$d/{RESTORE_MARKER}" ] || '
                f'{{ head -c {MARKER_LIMIT} "$d/{RESTORE_MARKER}" | tr "\\n" " "; echo .; }}\n')
_INSPECT_PROCESS = _RUNNING + """
data=0; [ -n "$(ls -A "$d/data/member/wal" 2>/dev/null)" ] && data=1
echo "$running $pid $data"
""" + _READ_MARKER
_STOP_PROCESS = f"""
[ -r "$d/etcd.pid" ] && read pid start < "$d/etcd.pid" || {{ echo 0; exit 0; }}
mine() {{ set -- $({_PROC_STAT}); [ "${{1:-Z}}" != Z ] && [ "${{2:-}}" = "$start" ]; }}
mine || {{ rm -f "$d/etcd.pid"; echo 0; exit 0; }}
kill -$sig "$pid" 2>/dev/null || true
i=0
while mine; do
  i=$((i + 1)); [ "$i" -eq "$ticks" ] && kill -KILL "$pid" 2>/dev/null
  sleep 0.05
done
rm -f "$d/etcd.pid"; echo 1
"""


class SSHRuntime:
    """MemberRuntime for members on other nodes; `hosts` maps member name -> SSH host."""

    def __init__(self, cfg: SSHConfig, etcd: EtcdConfig, hosts: dict[str, str],
                 log: Any = None) -> None:
        self.cfg = cfg
        self.etcd = etcd
        self.hosts = dict(hosts)
        self.log = log
        self._nodes: dict[str, SSHNode] = {}
        self.binaries: dict[str, str] = {}  # member -> [[members]] etcd_binary (overrides)
        self._fingerprints = RemoteFingerprints(log)
        self.log_max_bytes = LOG_MAX_BYTES  # [maintenance] log_max_bytes (process mode)

    def reconfigure(self, cfg: SSHConfig, etcd: EtcdConfig) -> None:
        if cfg != self.cfg:
            old, self._nodes = self._nodes, {}
            for n in old.values():
                asyncio.get_running_loop().create_task(n.close())
        self.cfg, self.etcd = cfg, etcd

    def node(self, name: str) -> SSHNode:
        host = self.hosts.get(name)
        if host is None:
            raise SSHError(name, "unreachable", f"no node known for member {name}")
        n = self._nodes.get(host)
        if n is None:
            n = self._nodes[host] = SSHNode(host, self.cfg, self.log)
        return n

    def member_dir(self, name: str) -> PurePosixPath:
        return PurePosixPath(self.cfg.data_root) / name

    def binary(self, name: str) -> str:
        """The etcd binary on `name`'s node: its own [[members]] etcd_binary, else [ssh]'s."""
        return self.binaries.get(name) or self.cfg.etcd_binary

    def env_file(self, name: str) -> str:
        return f"{ENV_DIR}/member-{name}.env"

    def _vars(self, name: str) -> str:
        return f"d={shlex.quote(str(self.member_dir(name)))}; "

    async def close(self) -> None:
        for n in self._nodes.values():
            await n.close()
        self._nodes.clear()

    # ---- MemberRuntime -----------------------------------------------------------
    async def connect(self, name: str) -> None:
        await self.node(name).connect()

    async def inspect(self, name: str) -> Runtime:
        node = self.node(name)
        units = self.cfg.member_service == "systemd"
        record = self.env_file(name) if units else f"{self.member_dir(name)}/{CMD_RECORD}"
        binary = self.binary(name)
        probe = probe_script(record, binary, self._fingerprints.known(node.host, binary))
        if units:
            unit = shlex.quote(UNIT.format(name=name))
            r = await node.run(
                self._vars(name) + f"systemctl show -p ActiveState -p MainPID {unit}; "
                'data=0; [ -n "$(ls -A "$d/data/member/wal" 2>/dev/null)" ] && data=1; '
                'echo "Data=$data"; printf "Restoring="; ' + _READ_MARKER + probe)
            head, cmd, identity, answer = split_probe(r.text)
            props = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
            pid = int(props.get("MainPID", "0") or 0)
            running = props.get("ActiveState") in ("active", "activating", "reloading")
            running, has_data = running and pid > 0, props.get("Data") == "1"
            marker = props.get("Restoring", "")
        else:
            r = await node.run(self._vars(name) + _INSPECT_PROCESS + probe)
            head, cmd, identity, answer = split_probe(r.text)
            first, _, marker = head.partition("\n")
            is_running, proc_id, data = first.split()
            running, has_data, pid = is_running == "1", data == "1", int(proc_id)
        change = self._fingerprints.change(
            node.host, name, Path(str(self.member_dir(name))), binary, self.etcd, cmd,
            identity, answer, units, running)
        return Runtime(reachable=True, running=running, has_data=has_data,
                       pid=(pid or None) if running else None,
                       restoring=_marker_note(marker), **change)

    async def mark_restoring(self, name: str, note: str | None) -> None:
        node = self.node(name)
        path = f"{self.member_dir(name)}/{RESTORE_MARKER}"
        if note is None:
            await node.run(f"rm -f {shlex.quote(path)}")
        else:
            await node.put(path, note.encode(), 0o600)

    def command_line(self, spec: MemberSpec) -> list[str]:
        d = Path(str(self.member_dir(spec.name)))
        return [self.binary(spec.name), *member_flags(spec, d / "data", d / "tls", self.etcd)]

    def env_content(self, spec: MemberSpec) -> bytes:
        """The member's EnvironmentFile for systemd/ckeetcd-member@.service."""
        cmd = self.command_line(spec)
        bad = [a for a in cmd if any(c.isspace() or c in "\"'\\$`" for c in a)]
        if bad:
            raise ValueError(f"etcd arguments cannot go into an EnvironmentFile: {bad}")
        return (f"# written by ckeetcd for member {spec.name}; do not edit\n"
                f"CKEETCD_ETCD_BINARY={cmd[0]}\n"
                f"CKEETCD_ETCD_FLAGS={' '.join(cmd[1:])}\n").encode()

    async def start(self, spec: MemberSpec) -> int:
        node = self.node(spec.name)
        state = await self.inspect(spec.name)
        if state.running and state.pid:
            return state.pid
        d = shlex.quote(str(self.member_dir(spec.name)))
        stamp = dt.datetime.now(dt.timezone.utc).isoformat()
        if self.cfg.member_service == "systemd":
            content = self.env_content(spec)
            path = self.env_file(spec.name)
            await node.put(path, content, 0o600)
            got = await node.run(f"sha256sum {shlex.quote(path)}")
            if got.text.split()[:1] != [hashlib.sha256(content).hexdigest()]:
                raise SSHError(node.host, "command", f"{path} does not read back as written")
            unit = shlex.quote(UNIT.format(name=spec.name))
            await node.run(f"umask 077; mkdir -p {d}/data && chmod 700 {d} {d}/data && "
                           f"echo '--- {stamp} start ({spec.initial_state})' >> {d}/etcd.log && "
                           f"systemctl start --no-block {unit}")
            async for _ in Poll(UNIT_START, Backoff(0.05)):
                state = await self.inspect(spec.name)
                if state.running and state.pid:
                    return state.pid
            raise SSHError(node.host, "command", f"{unit} did not start within {UNIT_START:g}s")
        argv = self.command_line(spec)
        cmd = " ".join(shlex.quote(a) for a in argv)
        # Under a lock, and only if not running by then: two daemons may start the
        # same member at once (the bootstrapper and the member's own node, without
        # quorum); the second finds it running instead of starting a second etcd.
        r = await node.run(
            f"set -e; umask 077; d={d}; mkdir -p \"$d/data\"; chmod 700 \"$d\" \"$d/data\"\n"
            "exec 9>>\"$d/start.lock\"; flock -w 10 9\n"
            + _RUNNING + "if [ $running = 1 ]; then echo $pid; exit 0; fi\n"
            f"[ {self.log_max_bytes} -gt 0 ] && [ \"$(wc -c 2>/dev/null < \"$d/etcd.log\" "
            f"|| echo 0)\" -ge {self.log_max_bytes} ] && mv -f \"$d/etcd.log\" "
            "\"$d/etcd.log.1\" || true\n"
            f"echo '--- {stamp} start ({spec.initial_state})' >> \"$d/etcd.log\"\n"
            + record_script(argv) +
            f"cd \"$d\"; setsid {cmd} 9>&- </dev/null >>\"$d/etcd.log\" 2>&1 &\n"
            "pid=$!\n"
            f"set -- $({_PROC_STAT})\n"
            "echo \"$pid $2\" > \"$d/etcd.pid.tmp\"; mv -f \"$d/etcd.pid.tmp\" \"$d/etcd.pid\"\n"
            "echo $pid\n")
        return int(r.text.split()[-1])

    async def stop(self, name: str, timeout: float = 10.0) -> bool:
        """SIGTERM (SIGKILL at once when timeout is 0), SIGKILL after `timeout`."""
        node = self.node(name)
        if self.cfg.member_service == "systemd":
            unit = shlex.quote(UNIT.format(name=name))
            state = await self.inspect(name)
            if not state.running:
                return False
            if timeout <= 0:
                # Our own SIGKILL is no failure of the member: without reset-failed the
                # unit stays "failed" and the node "degraded" after every removal.
                await node.run(f"systemctl kill -s KILL {unit}; systemctl stop {unit}; "
                               f"systemctl reset-failed {unit} 2>/dev/null || true")
            else:
                await node.run(f"systemctl stop {unit}", timeout=timeout + 30)
            return True
        ticks = max(int(timeout / 0.05), 1)
        sig = "TERM" if timeout > 0 else "KILL"
        r = await node.run(self._vars(name) + f"sig={sig}; ticks={ticks}\n" + _STOP_PROCESS,
                           timeout=timeout + self.cfg.command_timeout)
        return r.text.strip() == "1"

    async def archive_data(self, name: str, label: str = "removed") -> Path | None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        r = await self.node(name).run(
            self._vars(name) + f'[ -d "$d/data" ] || exit 0; t="$d/data.{label}-{stamp}"; '
            'mv "$d/data" "$t" && echo "$t"')
        out = r.text.strip()
        return Path(out) if out else None

    async def exit_info(self, name: str) -> MemberExit:
        """systemd: the unit's main process status and its journal; process mode: the
        tail of etcd.log (a detached process's exit status is not kept)."""
        node = self.node(name)
        if self.cfg.member_service == "systemd":
            unit = shlex.quote(UNIT.format(name=name))
            r = await node.run(f"systemctl show -p ExecMainCode -p ExecMainStatus {unit}; "
                               f"echo ---; journalctl -u {unit} -n {LOG_TAIL_LINES} -o cat "
                               "--no-pager 2>/dev/null || true", check=False)
            head, _, journal = r.text.partition("---\n")
            props = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
            code, status = props.get("ExecMainCode", ""), props.get("ExecMainStatus", "")
            if code == "1" and status.isdigit():  # CLD_EXITED
                return exit_of(int(status), journal, "")
            if code in ("2", "3") and status.isdigit():  # CLD_KILLED, CLD_DUMPED
                return killed_by(int(status), journal)
            return exit_of(None, journal, f"systemd reports ExecMainCode={code or '?'}")
        r = await node.run(self._vars(name) + f'tail -c {LOG_TAIL_BYTES} "$d/etcd.log" '
                           "2>/dev/null || true", check=False)
        return exit_of(None, r.text, "a detached process over SSH")

    async def archives(self, name: str) -> list[Archive]:
        # "KIB NAME" per data.* directory (du -k is POSIX); symlinks are skipped
        r = await self.node(name).run(
            self._vars(name) + 'cd "$d" 2>/dev/null || exit 0\n'
            'for a in data.*; do [ -d "$a" ] && [ ! -L "$a" ] || continue\n'
            '  echo "$(du -sk "$a" | cut -f1) $a"; done\n')
        found = []
        for line in r.text.splitlines():
            kib, _, entry = line.partition(" ")
            if is_archive(entry) and kib.isdigit():
                found.append(Archive(entry, int(kib) * 1024))
        return sorted(found, key=lambda a: a.name)

    async def prune_archives(self, name: str, keep: int) -> list[Archive]:
        found = await self.archives(name)
        doomed = set(prunable([a.name for a in found], keep))  # names matched a strict pattern
        gone = [a for a in found if a.name in doomed]
        if gone:
            paths = " ".join(shlex.quote(str(self.member_dir(name) / a.name)) for a in gone)
            await self.node(name).run(f"rm -rf -- {paths}")
        return gone

    async def known_members(self) -> list[str]:
        """Members with a directory on any node we know (desired or not)."""
        found: set[str] = set()
        for host in sorted(set(self.hosts.values())):
            name = next(n for n, h in self.hosts.items() if h == host)
            try:
                r = await self.node(name).run(
                    f"ls -1 {shlex.quote(self.cfg.data_root)} 2>/dev/null || true")
            except OSError:
                continue
            found |= {line for line in r.text.split() if line in self.hosts}
        return sorted(found)

    async def restore_data(self, name: str, snapshot: Path, spec: MemberSpec,
                           skip_hash_check: bool = False, bump: int = RESTORE_BUMP,
                           ) -> Path:
        """Copy `snapshot` to the node and `etcdutl snapshot restore` it there."""
        node = self.node(name)
        d = str(self.member_dir(name))
        remote_db = f"{d}/restore.db"
        await node.put(remote_db, snapshot.read_bytes(), 0o600)
        etcdutl = str(PurePosixPath(self.binary(name)).parent / "etcdutl")
        initial = ",".join(f"{n}={u}" for n, u in spec.initial_cluster)
        args = [etcdutl, "snapshot", "restore", remote_db, f"--name={spec.name}",
                f"--initial-cluster={initial}", f"--initial-cluster-token={spec.cluster_token}",
                f"--initial-advertise-peer-urls={spec.peer_url}", f"--data-dir={d}/data.restoring"]
        if skip_hash_check:
            args.append("--skip-hash-check")
        q = shlex.quote(d)
        probe = await node.run(f"{shlex.quote(etcdutl)} snapshot restore --help 2>&1 || true",
                               check=False)
        args += restore_bump_flags(probe.text, bump)
        await node.run(f"set -e; d={q}; [ ! -e \"$d/data\" ] || {{ echo \"$d/data exists\" >&2; "
                       "exit 1; }; rm -rf \"$d/data.restoring\"; "
                       + " ".join(shlex.quote(a) for a in args)
                       + "; chmod 700 \"$d/data.restoring\"; mv \"$d/data.restoring\" "
                       "\"$d/data\"; rm -f \"$d/restore.db\"", timeout=600)
        return Path(d) / "data"

    async def install_tls(self, name: str, files: dict[str, bytes]) -> None:
        node = self.node(name)
        tls = self.member_dir(name) / "tls"
        for fname, content in files.items():
            if "/" in fname or fname.startswith("."):
                raise ValueError(f"bad TLS file name {fname!r}")
            await node.put(str(tls / fname), content, 0o600 if fname.endswith(".key") else 0o644)

    async def read_tls(self, name: str, filename: str) -> bytes | None:
        path = shlex.quote(str(self.member_dir(name) / "tls" / filename))
        r = await self.node(name).run(f"[ -f {path} ] || exit 3; cat {path}", check=False)
        if r.status == 3:
            return None
        if r.status != 0:
            raise SSHError(self.node(name).host, "command", f"cat {path}: exit {r.status}")
        return r.stdout


def _marker_note(text: str) -> str:
    """The marker's note from `_READ_MARKER`'s output ("" = no marker)."""
    text = text.strip()
    if not text.endswith("."):
        return ""
    return text[:-1].strip() or "(empty marker)"

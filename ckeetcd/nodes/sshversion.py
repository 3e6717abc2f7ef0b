"""Ask the etcd binary of each SSH member's node which version it is (check-config).

Over the SSH the daemon uses (ckeetcd.nodes.sshnode: the config's host keys,
key, port and deadlines) and with the daemon's own inspection lines
(sshfingerprint.probe_script), so the answer is read as the daemon reads it
before a rolling change. Every node is asked at once, each within
`[ssh] connect_timeout` plus TIMEOUT, so a dead node costs one deadline, not
one per node; a node that does not answer is `unreachable`, never an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import replace

from ckeetcd.core.binaryreport import BinaryAnswer
from ckeetcd.core.config import Config, MemberConfig, SSHConfig
from ckeetcd.core.etcdversions import parse_version
from ckeetcd.nodes.sshfingerprint import RemoteFingerprints, probe_script, split_probe
from ckeetcd.nodes.sshnode import SSHNode

TIMEOUT = 5  # seconds `etcd --version` may take on the node (as etcdprobe.TIMEOUT here)


Asked = tuple[str, str, str]  # (host, binary, the config key that names the binary)


def ssh_binaries(config: Config) -> dict[Asked, list[MemberConfig]]:
    """The SSH members per (host, binary, key), in config order: one question each."""
    out: dict[Asked, list[MemberConfig]] = {}
    for i, m in enumerate(config.members):
        if m.runtime != "ssh":
            continue
        key = f"members[{i}].etcd_binary" if m.etcd_binary else "ssh.etcd_binary"
        out.setdefault((m.node_host, m.etcd_binary or config.ssh.etcd_binary, key),
                       []).append(m)
    return out


def node_label(host: str, members: Iterable[MemberConfig]) -> str:
    return f"{host} ({', '.join(m.name for m in members)})"


async def ssh_binary_answers(config: Config,
                             node: Callable[[str, SSHConfig], SSHNode] = SSHNode,
                             ) -> list[BinaryAnswer]:
    """One answer per (node, binary) of the SSH members; [] when there are none.
    `node` makes the connection to a host (tests run the same lines with a local sh)."""
    import asyncssh

    wanted = ssh_binaries(config)
    nodes = {host: node(host, config.ssh) for host, _, _ in wanted}
    deadline = config.ssh.connect_timeout + TIMEOUT + 3

    async def one(host: str, binary: str, key: str) -> BinaryAnswer:
        base = BinaryAnswer(key=key, binary=binary,
                            node=node_label(host, wanted[(host, binary, key)]))
        try:
            r = await asyncio.wait_for(nodes[host].run(
                probe_script("/dev/null", binary, "", version_timeout=TIMEOUT),
                timeout=TIMEOUT + 2), deadline)
        except TimeoutError:
            return replace(base, unreachable=f"no answer within {deadline:g}s")
        except (OSError, ValueError, asyncssh.Error) as e:  # SSHError is an OSError
            return replace(base, unreachable=str(e) or type(e).__name__)
        _, _, identity, answer = split_probe(r.text)
        fields = identity.split()
        if len(fields) != 4 or not all(f.replace(".", "").isdigit() for f in fields):
            # stat failed: no such binary there (its message says why)
            return replace(base, missing=identity or "cannot stat it")
        version, why = RemoteFingerprints().version(host, binary, identity, answer)
        if not version:
            return replace(base, unknown=why)
        return replace(base, version=parse_version(version))

    try:
        return list(await asyncio.gather(*(one(*asked) for asked in wanted)))
    finally:
        for n in nodes.values():
            await n.close()

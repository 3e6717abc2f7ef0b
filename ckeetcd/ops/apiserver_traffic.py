"""stop-apiserver-traffic / publish-endpoints: the etcd servers file.

The file holds the comma-separated client URLs kube-apiservers should use;
`reload_command` runs after each change. Cutting a member out of the file
before it is removed is how "stop apiserver traffic" is carried out.
"""

from __future__ import annotations

import asyncio

from ckeetcd.core.model import Op
from ckeetcd.ops.context import OpContext, OpFailed, Skip
from ckeetcd.support.files import write_atomic

RELOAD_TIMEOUT = 60.0


async def run(ctx: OpContext, op: Op) -> None:
    path = ctx.config.apiserver.etcd_servers_file
    if path is None:
        raise OpFailed("[apiserver] etcd_servers_file is not set")
    content = ",".join(op.endpoints) + "\n"
    async with ctx.step(op, "write-file", path=str(path)):
        if path.exists() and path.read_text() == content:
            raise Skip("unchanged")
        write_atomic(path, content.encode())
    command = ctx.config.apiserver.reload_command
    if command:
        async with ctx.step(op, "reload"):
            proc = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), RELOAD_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise OpFailed(f"reload_command timed out after {RELOAD_TIMEOUT:g}s") from None
            if proc.returncode != 0:
                tail = out.decode(errors="replace")[-500:]
                raise OpFailed(f"reload_command exited {proc.returncode}: {tail}")

"""start-member / restart-member: place TLS files, start etcd on its node.

start-member runs a new member (`--initial-cluster-state=new` at bootstrap,
`existing` for a learner just added, on an empty data dir); restart-member
runs a stopped member on the data it still has.
"""

from __future__ import annotations

from ckeetcd.model import Op
from ckeetcd.nodes import MemberSpec
from ckeetcd.ops.context import OpContext, OpFailed, Skip
from ckeetcd.ops.tls import ensure_member_tls


async def run(ctx: OpContext, op: Op) -> None:
    async with ctx.step(op, "install-tls"):
        await ensure_member_tls(ctx, op.member)
    async with ctx.step(op, "start-process"):
        state = await ctx.runtime.inspect(op.member)
        if not state.reachable:
            raise OpFailed(f"node of {op.member} unreachable: {state.error}")
        if state.running:
            raise Skip(f"already running (pid {state.pid})")
        if op.kind == "start-member" and op.initial_state == "existing" and state.has_data:
            raise OpFailed(f"{op.member} has data; a joining member needs an empty data dir")
        spec = MemberSpec(
            name=op.member,
            client_url=op.client_url,
            peer_url=op.peer_url,
            cluster_token=ctx.desired.cluster_name,
            initial_cluster=op.initial_cluster,
            initial_state=op.initial_state,
        )
        pid = await ctx.runtime.start(spec)
        ctx.log.info("member_started", member=op.member, pid=pid, state=op.initial_state)

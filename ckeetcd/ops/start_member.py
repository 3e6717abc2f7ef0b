"""start-member / restart-member: place TLS files, start etcd, watch it come up.

start-member runs a new member (`--initial-cluster-state=new` at bootstrap,
`existing` for a learner just added, on an empty data dir); restart-member
runs a stopped member on the data it still has. Either gets
`--peer-cert-allowed-cn` only when every other member's peer certificate carries the
shared CN (ckeetcd.core.peercn.start_flag: the flag on a member refuses any other).

The start is not "ok" merely because a process was spawned: the op watches
the member for up to `START_WATCH` seconds and fails, with etcd's exit
status and last log line, when the process exits before it is healthy (a
flag value etcd refuses, corrupt data, a port taken). A member still
starting when the watch ends (a bootstrap waiting for its peers, a long WAL
replay) is left to the observer, which reports a later exit the same way.
Every start is counted in the start book, whose back-off (ckeetcd.core.restarts)
decide() respects: a member that keeps exiting is never restarted in a
tight loop.
"""

from __future__ import annotations

from ckeetcd.core.kinds import OpKind
from ckeetcd.core.model import MemberExit, StartMember
from ckeetcd.core.peercn import start_flag
from ckeetcd.etcd import EtcdError
from ckeetcd.nodes import MemberSpec
from ckeetcd.ops.context import OpContext, OpFailed, Skip
from ckeetcd.ops.tls import client_trust, ensure_member_tls, peer_trust
from ckeetcd.support.polling import Backoff, Poll

START_WATCH = 5.0  # seconds a new process is watched for an early exit
WATCH_POLL = 0.05
HEALTH_RPC = 0.5  # deadline of each Status call while watching


async def run(ctx: OpContext, op: StartMember) -> None:
    async with ctx.step(op, "install-tls"):
        await ensure_member_tls(ctx, op.member)
    async with ctx.step(op, "start-process"):
        state = await ctx.runtime.inspect(op.member)
        if not state.reachable:
            raise OpFailed(f"node of {op.member} unreachable: {state.error}")
        if state.running:
            raise Skip(f"already running (pid {state.pid})")
        if op.kind == OpKind.START_MEMBER and op.initial_state == "existing" and state.has_data:
            raise OpFailed(f"{op.member} has data; a joining member needs an empty data dir")
        spec = MemberSpec(
            name=op.member,
            client_url=op.client_url,
            peer_url=op.peer_url,
            cluster_token=ctx.desired.cluster_name,
            initial_cluster=op.initial_cluster,
            initial_state=op.initial_state,
            peer_trust=peer_trust(ctx),
            client_trust=client_trust(ctx),
            peer_allowed_cn=start_flag(ctx.desired, ctx.observed, op.member),
        )
        if ctx.starts is not None:
            ctx.starts.started(op.member)  # counted before spawning: a failed spawn holds too
        try:
            pid = await ctx.runtime.start(spec)
        except Exception as e:
            if ctx.starts is not None:
                ctx.starts.exited(op.member, MemberExit(f"not started: {type(e).__name__}: {e}"))
            raise
        if ctx.starts is not None:
            ctx.starts.spawned(op.member, pid)
    async with ctx.step(op, "watch-start", pid=pid):
        healthy = await _watch(ctx, op, pid)
    ctx.log.info("member_started", member=op.member, pid=pid, state=op.initial_state,
                 healthy=healthy)


async def _watch(ctx: OpContext, op: StartMember, pid: int) -> bool:
    """True once the member is healthy, False when still starting at the deadline;
    raises OpFailed when its process exited first."""
    d = ctx.desired.by_name(op.member)
    url = op.client_url or (d.client_url if d else "")
    async for _ in Poll(START_WATCH, Backoff(WATCH_POLL)):
        state = await ctx.runtime.inspect(op.member)
        if state.reachable and (not state.running or state.pid != pid):
            raise OpFailed(await _exit_reason(ctx, op.member))
        if url and await _healthy(ctx, url):
            return True
    return False


async def _healthy(ctx: OpContext, url: str) -> bool:
    try:
        return (await ctx.pool.get(url).status(timeout=HEALTH_RPC)).healthy
    except EtcdError:
        return False


async def _exit_reason(ctx: OpContext, name: str) -> str:
    info = await ctx.runtime.exit_info(name)
    record = ctx.starts.exited(name, info) if ctx.starts is not None else {}
    last = info.reason or "(its log says nothing)"
    held = f"; next start not before {record['next_start']}" if record.get("next_start") else ""
    return f"etcd exited ({info.status}) before it became healthy: {last}{held}"

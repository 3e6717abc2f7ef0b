"""The step protocol: what each step leaves in the history and the log, and what the op sees."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from ckeetcd.core.kinds import Reason
from ckeetcd.core.model import (
    AddMember,
    Compact,
    DefragMember,
    Desired,
    DisarmAlarm,
    EnsureRbac,
    Op,
    RemoveMember,
    RenewCerts,
)
from ckeetcd.loop.env import make_env
from ckeetcd.loop.startup import load_ca_for
from ckeetcd.ops import OPS, OpContext, Skip
from ckeetcd.ops.steps import StepRecorder
from ckeetcd.support.history import History
from tests.harness import Cluster, named, wait_for

COMPACT = Compact()


@pytest.fixture(autouse=True)
def _captured(logs: list[Any]) -> None:
    """Every step logs: into capture_logs, never to a stream an earlier test configured."""


def context(tmp_path: Path, **kw: Any) -> tuple[OpContext, Any, History]:
    log, history = structlog.get_logger(), History(tmp_path)
    ctx = OpContext(config=None, desired=None, observed=None, runtime=None,  # type: ignore[arg-type]
                    pool=None, ca=None, history=history, log=log, cycle=7,  # type: ignore[arg-type]
                    failpoint="", **kw)
    return ctx, log, history


def steps_of(history: History) -> list[tuple[Any, ...]]:
    return [(r["event"], r["op"], r["step"], r.get("outcome"), r.get("error"), r.get("cycle"))
            for r in history.read()]


async def test_a_skip_ends_the_step_as_skipped_and_the_op_sees_it(
        logs: list[Any], tmp_path: Path) -> None:
    ctx, _, history = context(tmp_path)
    async with ctx.step(COMPACT, "compact") as step:
        raise Skip("already compacted at revision 9")
    assert step.skipped and step.reason == "already compacted at revision 9"
    assert steps_of(history) == [
        ("step-begin", "compact", "compact", None, None, 7),
        ("step-end", "compact", "compact", "skipped", "already compacted at revision 9", 7)]
    [line] = named(logs, "op_step")
    assert (line["log_level"], line["outcome"], line["error"]) == \
        ("info", "skipped", "already compacted at revision 9")


async def test_a_step_with_nothing_to_do_is_recorded_without_a_block(tmp_path: Path) -> None:
    ctx, _, history = context(tmp_path)
    op = RemoveMember(member="m4", member_id=0x42)
    step = await ctx.skip(op, "member-remove", "no longer a member", member_id="42")
    assert step.skipped
    assert steps_of(history) == [
        ("step-begin", "remove-member", "member-remove", None, None, 7),
        ("step-end", "remove-member", "member-remove", "skipped", "no longer a member", 7)]
    assert {r["targets"] for r in history.read()} == {"m4"}
    assert {r["member_id"] for r in history.read()} == {"42"}


async def test_ok_and_error_steps(logs: list[Any], tmp_path: Path) -> None:
    ctx, _, history = context(tmp_path)
    async with ctx.step(COMPACT, "compact") as step:
        pass
    assert not step.skipped and step.outcome == "ok"
    with pytest.raises(ValueError, match="boom"):
        async with ctx.step(COMPACT, "compact"):
            raise ValueError("boom")
    assert [s[3:5] for s in steps_of(history) if s[0] == "step-end"] == \
        [("ok", ""), ("error", "ValueError: boom")]
    ok, failed = named(logs, "op_step")
    assert "error" not in ok and ok["log_level"] == "info"
    assert (failed["log_level"], failed["error"]) == ("warning", "ValueError: boom")


async def test_a_cancelled_step_is_recorded_as_an_error_not_as_ok(tmp_path: Path) -> None:
    ctx, _, history = context(tmp_path)
    entered = asyncio.Event()

    async def op() -> None:
        async with ctx.step(COMPACT, "compact"):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(op())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps_of(history)[-1][:5] == ("step-end", "compact", "compact", "error",
                                         "CancelledError: ")


async def test_the_fence_runs_before_each_step_and_a_refusal_fails_it(tmp_path: Path) -> None:
    fenced: list[Op] = []

    async def fence(op: Op) -> None:
        fenced.append(op)
        if len(fenced) == 2:
            raise RuntimeError("not the leader")

    ctx, _, history = context(tmp_path, fence=fence)
    ran: list[str] = []
    async with ctx.step(COMPACT, "first"):
        ran.append("first")
    with pytest.raises(RuntimeError):
        async with ctx.step(COMPACT, "second"):
            ran.append("second")
    assert fenced == [COMPACT, COMPACT] and ran == ["first"]
    assert steps_of(history)[-1][3:5] == ("error", "RuntimeError: not the leader")


async def test_a_recorder_outside_the_loop_records_no_cycle(logs: list[Any],
                                                            tmp_path: Path) -> None:
    """The restore's steps: no daemon cycle to name."""
    history, log = History(tmp_path), structlog.get_logger()
    steps = StepRecorder(history, log, "restore-cluster", "m1,m2", failpoint="")
    async with steps.step("stop-members"):
        pass
    assert [sorted(r) for r in history.read()] == [
        ["event", "op", "pid", "step", "targets", "ts"],
        ["duration", "error", "event", "op", "outcome", "pid", "step", "targets", "ts"]]
    assert named(logs, "op_step")[0]["targets"] == "m1,m2"


def test_ops_stop_at_a_skipped_check(make_cluster: Callable[..., Cluster],
                                     tmp_path: Path) -> None:
    """Each op whose precondition no longer holds records one skipped step and stops:
    no pre-change snapshot, no later step, nothing changed."""
    c = make_cluster(["m1"])
    c.start_daemon()
    c.wait_healthy(["m1"])
    wait_for(lambda: [e for e in c.events("cycle") if e["phase"] == "steady"], 30,
             "a steady cycle", abort=c.daemon_died)
    c.stop_daemon()
    config = c.config
    config = dataclasses.replace(config, maintenance=dataclasses.replace(
        config.maintenance, defrag_threshold=1.0))  # no fragmentation is above 100%
    snapshots = sorted((c.state_dir / "snapshots").glob("*"))
    history, log = History(tmp_path), structlog.get_logger()

    async def go() -> None:
        env = make_env(config, readonly=True)
        try:
            desired = Desired.from_config(config)
            observed = await env.observer.observe(desired)
            ctx = OpContext(config=config, desired=desired, observed=observed,
                            runtime=env.runtime, pool=env.pool, ca=load_ca_for(config),
                            history=history, log=log, failpoint="")
            [m1] = observed.members or ()
            url = m1.client_urls[0]
            for op in (AddMember(member="m1", peer_url=m1.peer_urls[0]),
                       RemoveMember(member="m9", member_id=0x99),
                       DisarmAlarm(alarm="NOSPACE"),
                       RenewCerts(member="m1", client_url=url),
                       EnsureRbac(),
                       DefragMember(member="m1", client_url=url, reason=Reason.FRAGMENTED)):
                await OPS[op.kind](ctx, op)
        finally:
            await env.close()

    asyncio.run(go())
    assert [(r["op"], r["step"], r["outcome"]) for r in history.read()
            if r["event"] == "step-end"] == [
        ("add-member", "member-add", "skipped"),
        ("remove-member", "member-remove", "skipped"),
        ("disarm-alarm", "check-space", "skipped"),
        ("renew-member-certs", "install-tls", "skipped"),
        ("ensure-rbac", "converge", "skipped"),
        ("defrag-member", "check-health", "skipped")]
    assert sorted((c.state_dir / "snapshots").glob("*")) == snapshots

"""The daemon: observe -> plan -> run, forever, woken by events.

A probe runs every `probe_interval`; a cycle (decide + run + one summary log
line) starts at once when the config, the member list or member health
changes, after ops ran, and at least every `interval`. SIGTERM/SIGINT stop
it between steps; SIGHUP or an edited config file reload it (a bad new
config is reported and the last good one stays in force).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from ckeetcd.coordination.election import Leadership
from ckeetcd.core.config import Config, ConfigError, load_config
from ckeetcd.core.kinds import SETTLED_PHASES, OpKind, Phase
from ckeetcd.core.model import Decision, Desired, Observed
from ckeetcd.core.planner import plan
from ckeetcd.core.readiness import start_status
from ckeetcd.loop.daemonca import EXIT_REFUSED
from ckeetcd.loop.env import Env, make_env
from ckeetcd.loop.rotationfollow import RotationFollow
from ckeetcd.loop.runner import run_ops
from ckeetcd.loop.sidetasks import SideTask, build_side_tasks, stop_all, supervise
from ckeetcd.loop.startup import can_lead, claim, daemon_ca, prune_archives, reload_client_ca
from ckeetcd.nodes import LocalRuntime, etcdprobe
from ckeetcd.nodes.router import RoutedRuntime
from ckeetcd.ops import OpContext
from ckeetcd.ops.context import FAILPOINT_ENV
from ckeetcd.pki import Trust
from ckeetcd.support import logs
from ckeetcd.support.filewatch import FileWatch
from ckeetcd.support.history import History
from ckeetcd.support.sdnotify import Notifier
from ckeetcd.support.statelock import acquire_state_lock, lock_holder
from ckeetcd.tasks.keymodes import KeyModeWatch
from ckeetcd.tasks.metrics import METRICS

EXIT_CONFIG = 2  # the config or its state dir must be fixed; nothing was changed

TRANSITION_POLL = 0.1
FOLLOW_UP = 0.05  # after ops ran: look again this soon at what they changed
# ... and after a rolling step, at once: the restart's watch saw the member healthy (or
# leadership moved), and the next step's own gates (every member healthy and caught
# up) are what the next observation checks; waiting first only delays it.
ROLLING_FOLLOW_UP = 0.0
# After a change, an unsettled-looking phase (degraded, no-quorum) is polled
# fast for this long before the loop falls back to the probe cadence.
SETTLE_WINDOW = 10.0
CONFIG_POLL = 0.1  # a stat() of the config file when inotify is unavailable
CONFIG_SETTLE = 0.05  # a changed config must hold still this long before it is read
WATCHED_SLICE = 1.0  # with inotify: only the watchdog needs the loop to look up
# While ops run, the watchdog keeps being pinged for at most this long; an op
# (a defragmentation, a snapshot) still running then counts as hung.
OPS_WATCHDOG_BUDGET = 1800.0


def health_signature(observed: Observed) -> tuple[Any, ...]:
    """What, when it changes, must start a cycle at once."""
    members = tuple(
        (m.id, m.learner, observed.is_healthy(m)) for m in observed.members or ()
    )
    runtimes = tuple(sorted((n, r.running, r.has_data, r.reachable)
                            for n, r in observed.runtimes.items()))
    return (observed.members is None, members, runtimes, observed.leader_id())


class Daemon:
    def __init__(self, config: Config, config_mtime: float | None = None) -> None:
        """`config_mtime`: the file's mtime from before `config` was read from it, so that
        an edit made between that read and this start (the etcd probe runs in between)
        is reloaded by the first cycle rather than missed."""
        self.config = config
        self.log = logs.get()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._reload_requested = False
        self._config_mtime = _mtime(config.path) if config_mtime is None else config_mtime
        self._config_watched = False
        self.cycle = 0
        self.notify = Notifier.from_env()  # systemd: READY, RELOADING, STOPPING, WATCHDOG
        self._started = False  # the first READY=1 was sent: the cluster served
        self._ready = False  # READY=1 sent (once serving, again after reloads)

    # ---- signals and reload --------------------------------------------------
    def request_stop(self) -> None:
        if not self._stop.is_set():
            self.notify.stopping()
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    def _config_changing(self) -> bool:
        return _mtime(self.config.path) != self._config_mtime

    async def _settle_config(self) -> None:
        """Let a writer finish: read the file only once its mtime held still for a
        moment (an editor writing in place is seen truncated otherwise)."""
        last = _mtime(self.config.path)
        for _ in range(20):  # at most ~1 s
            await asyncio.sleep(CONFIG_SETTLE)
            now = _mtime(self.config.path)
            if now == last:
                return
            last = now

    def _maybe_reload(self) -> bool:
        mtime = _mtime(self.config.path)
        if not self._reload_requested and mtime == self._config_mtime:
            return False
        self._reload_requested = False
        self._config_mtime = mtime
        if self._started:  # before the first READY=1 there is no reload to announce
            self.notify.reloading()
        self._ready = False  # READY=1 again once a cycle ran on what is now in force
        try:
            new = load_config(self.config.path)
            found = etcdprobe.problems(new)  # cached: runs etcd only for a changed binary
            if found:
                raise ConfigError(found)
        except ConfigError as e:
            self.log.error("config_rejected", file=str(self.config.path),
                           problems=[str(p) for p in e.problems])
            return False
        if new.cluster != self.config.cluster:
            self.log.error("config_rejected", file=str(self.config.path),
                           problems=["[cluster] cannot change while running; restart the daemon"])
            return False
        changed = new != self.config
        self.config = new
        self.log.info("config_reloaded", file=str(new.path), changed=changed,
                      members=[m.name for m in new.members])
        return changed

    # ---- the loop ------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        if not claim(self.config, self.log):
            return EXIT_CONFIG
        lock = acquire_state_lock(self.config.cluster.state_dir)
        if lock is None:
            self.log.error("state_dir_locked", state_dir=str(self.config.cluster.state_dir),
                           holder=lock_holder(self.config.cluster.state_dir))
            return 1
        trust = daemon_ca(self.config, self.log)  # under the lock: each CA made once
        if trust is None:
            os.close(lock)
            return EXIT_REFUSED
        keys = KeyModeWatch(self.config.cluster.state_dir, self.log)
        keys.check()
        history = History(self.config.cluster.state_dir, self.config.maintenance.log_max_bytes)
        env = make_env(self.config, log=self.log, history=history)
        watch = FileWatch(self.config.path, self._wake.set)
        self._config_watched = watch.start()
        local = env.runtime.local if isinstance(env.runtime, RoutedRuntime) else env.runtime
        if isinstance(local, LocalRuntime):
            local.on_exit = lambda name: self._wake.set()  # a member died: repair now
        self.leadership = Leadership(self.config, env.pool, self.log,
                                     can_lead=can_lead(self.config))
        rotation = RotationFollow(self.config, env.pool, self.leadership, self.log)
        side: list[SideTask] = build_side_tasks(
            self.config, {"pool": env.pool, "log": self.log, "history": history, "ca": trust.client,
                          "runtime": env.runtime, "may_act": self.leadership.may_act})
        running = [asyncio.create_task(supervise(t, self.log), name=t.name) for t in side]
        # supervised like a side task: an unexpected error must not end the campaign
        running.append(asyncio.create_task(supervise(self.leadership, self.log),
                                           name="election"))
        running.append(asyncio.create_task(prune_archives(env, self.config, history, self.log),
                                           name="prune-archives"))
        self.log.info("daemon_started", config=str(self.config.path),
                      cluster=self.config.cluster.name,
                      members=[m.name for m in self.config.members])
        last_sig: tuple[Any, ...] | None = None
        last_phase = ""
        last_full = 0.0
        last_change = 0.0
        ran_ops = False
        backoff = 0.0
        try:
            while not self._stop.is_set():
                await self._failpoint_hang()
                # Cleared before looking, never after: a member that dies or a
                # config written while this cycle runs wakes the next one at once.
                self._wake.clear()
                if self._config_changing():
                    await self._settle_config()
                if self._maybe_reload():
                    env.reconfigure(self.config)
                    history.max_bytes = self.config.maintenance.log_max_bytes
                    self.leadership.reconfigure(self.config)
                    last_full = 0.0
                desired = Desired.from_config(self.config)
                now = time.monotonic()
                full = now - last_full >= self.config.daemon.interval
                if full:
                    keys.check()  # a stat per key: opened-up keys are put back to 0600
                # After ops, a deep look (users, roles, certificates, alarms) at what they
                # may have changed; a rolling restart changes none of those (its member's
                # health and version come with every observation).
                deep = full or (ran_ops and last_phase != Phase.ROLLING)
                await rotation.before_observe()  # a CA rotation's record, from etcd too
                observed = await env.observer.observe(desired, deep=deep)
                observed, followed = rotation.after_observe(self.config, desired, observed)
                if followed:  # a finished CA rotation reached this host's CA files
                    trust = reload_client_ca(self.config, trust, side, self.log)
                if isinstance(env.runtime, RoutedRuntime):
                    env.runtime.learn(observed.members)  # where leaving members live
                sig = health_signature(observed)
                decision = plan(desired, observed, self.leadership.standing())
                self.leadership.see(observed, decision.role)
                for task in side:  # after the plan: leader-only tasks follow the role
                    task.offer(self.config, desired, observed)
                if side:
                    await asyncio.sleep(0)  # let side tasks publish before ops hold the loop
                if sig != last_sig:
                    self._log_health(observed)
                changed = sig != last_sig or decision.phase != last_phase \
                    or self.leadership.role_changed()
                if full or ran_ops or changed or decision.ops:
                    self.cycle += 1
                    last_full = now if full else last_full
                    ran_ops, ok = await self._cycle(env, trust, history, desired, observed,
                                                    decision)
                    if any(op.kind == OpKind.ROTATE_CA for op in decision.ops):
                        trust = reload_client_ca(self.config, trust, side, self.log)
                    METRICS.cycle_finished(decision.phase, time.monotonic() - now, decision.role)
                    # A failed op is decided again, but not in a tight loop.
                    backoff = 0.0 if ok else min(max(backoff * 2, 0.2),
                                                 self.config.daemon.interval)
                if changed or ran_ops:
                    last_change = now
                last_sig, last_phase = sig, decision.phase
                self._notify_cycle(decision, observed)
                if os.environ.get(FAILPOINT_ENV, "") == "loop-slow":  # tests: a long tail
                    await asyncio.sleep(1.0)
                pause = self.config.daemon.probe_interval
                if ran_ops:  # follow up on what the ops changed
                    pause = ROLLING_FOLLOW_UP if decision.phase == Phase.ROLLING else FOLLOW_UP
                elif decision.phase not in SETTLED_PHASES or (
                    decision.phase != Phase.STEADY and now - last_change < SETTLE_WINDOW
                ):
                    # waiting for etcd, not for time: a member starting, an
                    # election, a cluster just formed (no-quorum for a moment)
                    pause = min(pause, TRANSITION_POLL)
                held = [r.held_until for r in observed.runtimes.values()
                        if r.held_until and not r.running]
                if held:  # wake when the first member's restart hold ends
                    pause = min(pause, max(min(held) - time.time(), TRANSITION_POLL))
                await self._sleep(max(pause, backoff))
        finally:
            watch.stop()
            await stop_all(running)
            await self.leadership.resign()
            await env.close()
            os.close(lock)
            self.log.info("daemon_stopped", cycles=self.cycle)
        return 0

    async def _cycle(self, env: Env, trust: Trust, history: History, desired: Desired,
                     observed: Observed, decision: Decision) -> tuple[bool, bool]:
        """Run the decision's ops and log the cycle; returns (ran ops, all ok)."""
        start = time.monotonic()
        ok = True
        if decision.ops:
            ctx = OpContext(config=self.config, desired=desired, observed=observed,
                            runtime=env.runtime, pool=env.pool, ca=trust.client, history=history,
                            peer_ca=trust.peer,
                            log=self.log, cycle=self.cycle, fence=self.leadership.fence,
                            starts=env.observer.book)
            async with self.notify.busy(OPS_WATCHDOG_BUDGET):
                ok = await run_ops(ctx, decision)
        self.log.info(
            "cycle", cycle=self.cycle, phase=decision.phase, reason=decision.reason,
            role=decision.role,
            ops=[f"{op.kind}:{op.targets()}" for op in decision.ops],
            outcome="ok" if ok else "error",
            healthy=len([m for m in observed.members or () if observed.is_healthy(m)]),
            members=len(observed.members or ()),
            duration=round(time.monotonic() - start, 4),
        )
        return bool(decision.ops), ok

    def _notify_cycle(self, decision: Decision, observed: Observed) -> None:
        """systemd: the first READY=1 once the cluster serves (ckeetcd.core.readiness), again
        after a cycle on a reloaded config; STATUS with the phase; WATCHDOG."""
        status = f"{decision.phase}: {decision.reason}" if decision.reason else decision.phase
        if not self._started:
            self._started, status = start_status(observed, status)
        if self._started and not self._ready:
            self._ready = True
            self.notify.ready(status)
        else:
            self.notify.status(status)
        self.notify.ping()

    async def _failpoint_hang(self) -> None:
        """Failpoint `CKEETCD_FAILPOINT=loop-hang:N` (after cycle N) or `loop-hang:FILE`
        (once FILE exists): the control loop stops (the event loop, side tasks and
        metrics go on), as a hung loop would, until SIGTERM."""
        point = os.environ.get(FAILPOINT_ENV, "")
        if not point.startswith("loop-hang:"):
            return
        arg = point.split(":", 1)[1]
        if (self.cycle >= int(arg)) if arg.isdigit() else Path(arg).exists():
            self.log.warning("failpoint", point="loop-hang", cycle=self.cycle)
            await self._stop.wait()

    def _log_health(self, observed: Observed) -> None:
        members = [
            {"name": m.name, "id": f"{m.id:x}", "healthy": observed.is_healthy(m),
             "learner": m.learner, "leader": m.id == observed.leader_id()}
            for m in observed.members or ()
        ]
        self.log.info("health", reachable=observed.members is not None,
                      quorum=observed.has_quorum(), members=members)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early on a signal, a member's exit or a config change
        (also one that came while the cycle ran: the loop clears the event)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            self.notify.ping()
            # with inotify the config wakes us itself; without, poll its mtime
            slice_ = WATCHED_SLICE if self._config_watched else CONFIG_POLL
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(left, slice_))
            if self._wake.is_set() or _mtime(self.config.path) != self._config_mtime:
                return


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0



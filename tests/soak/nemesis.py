"""The faults. Each is a step in two phases: `begin` (inject), then `end` after `hold` s.

The engine times every fault from just before `begin` until the cluster is
steady again. A fault only ever signals processes this run started: a
member's etcd (started by our daemon; the PID comes from its pidfile and is
checked against the process start time before every signal), or our daemon.

Kinds (FAULT_KINDS): kill-follower, kill-leader, kill-quorum (two members at
once), hang-follower, hang-leader (SIGSTOP for `hold`, then SIGCONT),
wipe-member (its data dir deleted, then the process killed: the daemon must
replace it), disk-full (its disk, a tmpfs of tests/soak/disk.py, filled to
the last byte for `hold`, then freed: etcd exits, the daemon must restart it
once there is room), swap (one member replaced by a new one in [[members]]),
swap-under-fault (the same while another fault is active),
daemon-killed-mid-swap (the daemon SIGKILLed after a random step of a swap,
then started again), and restore-killed-mid-way (a backup under load, then
`ckeetcd restore` from it SIGKILLed after a random step, run again to the
end, the daemon started again: the store goes back to the snapshot;
tests/soak/restorefault.py), and daemon-killed-mid-rolling (the daemon
SIGKILLed after a random step of a rolling change: tests/soak/rolling.py).
The schedule of kinds is tests/soak/deck.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import Cluster, ports_free
from tests.soak.disk import Disks
from tests.soak.probe import Probe


@dataclass(frozen=True)
class Proc:
    """A process identified by PID and start time (field 22 of /proc/PID/stat)."""

    pid: int
    start_time: str

    def alive(self) -> bool:
        return proc_start_time(self.pid) == self.start_time

    def signal(self, sig: int) -> bool:
        """Send `sig` only if this is still the same process; whether it was sent."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True


def proc_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]


class World:
    """What faults act on: the cluster, its desired members, its processes."""

    def __init__(self, cluster: Cluster, probe: Probe, names: list[str], rng: random.Random,
                 daemon_env: dict[str, str] | None = None, disks: Disks | None = None,
                 binaries: tuple[str, ...] = ()) -> None:
        self.cluster = cluster
        self.probe = probe
        self.names = list(names)
        self.rng = rng
        self.daemon_env = daemon_env or {}
        self.disks = disks  # every member dir on its own small disk (None: plain dirs)
        self.binaries = binaries  # etcd binaries a rolling change may flip between
        self._next_member = 1 + max(int(n[1:]) for n in names if n[1:].isdigit())

    # ---- members ---------------------------------------------------------
    def url(self, name: str) -> str:
        return self.cluster.client_url(name)

    def peer_url(self, name: str) -> str:
        return f"https://{self.cluster.address_of(name)}:2380"

    def _pidfile(self, name: str) -> dict[str, Any] | None:
        try:
            info = json.loads((self.cluster.state_dir / "members" / name / "etcd.pid")
                              .read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def proc(self, name: str) -> Proc | None:
        """The member's live etcd, from its pidfile."""
        try:
            info = self._pidfile(name)
            p = Proc(int(info["pid"]), str(info["start_time"]))  # type: ignore[index]
        except (ValueError, KeyError, TypeError):
            return None
        return p if p.alive() else None

    def command(self, name: str) -> list[str] | None:
        """The command line the member's live etcd was started with (None: not running)."""
        info = self._pidfile(name)
        if self.proc(name) is None or info is None or not isinstance(info.get("cmd"), list):
            return None
        return [str(a) for a in info["cmd"]]

    def leader(self) -> str | None:
        """The member every answering desired member names as leader."""
        ids: dict[int, str] = {}
        leaders = set()
        for n in self.names:
            st = self.probe.status(self.url(n))
            if st is not None:
                ids[st.member_id] = n
                leaders.add(st.leader)
        if len(leaders) != 1:
            return None
        return ids.get(leaders.pop())

    def pick(self, role: str) -> str:
        """A member by role: "leader", "follower" or "any"."""
        if role == "any":
            return self.rng.choice(self.names)
        leader = self.leader()
        if leader is None:
            raise FaultError("no agreed raft leader to pick a target by role")
        if role == "leader":
            return leader
        return self.rng.choice([n for n in self.names if n != leader])

    def new_member(self) -> str:
        """A fresh member name whose address nothing listens on."""
        while True:
            name = f"m{self._next_member}"
            self._next_member += 1
            c = self.cluster
            while name not in c.addresses:
                c._host += 1
                address = f"{c.block}.{c._host}"
                if c._host > 254:
                    raise FaultError(f"loopback block {c.block}.0/24 exhausted")
                if ports_free(address):
                    c.addresses[name] = address
            if self.disks is not None:
                self.disks.add(name)  # its disk is there before the daemon makes its dir
            return name

    def swap(self, leaving: str) -> str:
        """Replace `leaving` by a new member in [[members]] (the daemon does the rest)."""
        new = self.new_member()
        self.names = [new if n == leaving else n for n in self.names]
        self.cluster.write_config(self.names)
        return new

    # ---- the daemon ------------------------------------------------------
    def kill_daemon(self) -> None:
        d = self.cluster.daemon
        if d is not None and d.poll() is None:
            d.send_signal(signal.SIGKILL)
            d.wait(30)

    def start_daemon(self) -> None:
        self.cluster.start_daemon(env=self.daemon_env)


class FaultError(Exception):
    """A fault could not be injected as asked (a failure of the run)."""


class DaemonLogTail:
    """New JSON events of the daemon log, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new(self) -> list[dict[str, Any]]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in data[:end].splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


# ---- the faults ----------------------------------------------------------------
@dataclass
class Fault:
    """Base: `kind` names it in the figures; `hold` is the time between begin and end."""

    kind: str = ""
    hold: float = 0.0
    after: dict[str, Any] = field(default_factory=dict, repr=False)  # what `end` found


    def begin(self, w: World) -> dict[str, Any]:
        raise NotImplementedError

    def end(self, w: World) -> None:
        return None

    def pending(self, w: World) -> str | None:
        """What of the fault's own outcome is still to come (None: nothing): the engine
        waits for it as for steady."""
        return None


@dataclass
class Kill(Fault):
    """SIGKILL the leader, a follower, or (count=2) two members at once."""

    role: str = "follower"
    count: int = 1

    def __post_init__(self) -> None:
        self.kind = "kill-quorum" if self.count > 1 else f"kill-{self.role}"

    def begin(self, w: World) -> dict[str, Any]:
        targets = w.rng.sample(w.names, self.count) if self.count > 1 else [w.pick(self.role)]
        procs = [(t, w.proc(t)) for t in targets]
        missing = [t for t, p in procs if p is None]
        if missing:
            raise FaultError(f"no live etcd process for {missing}")
        for _, p in procs:
            assert p is not None
            p.signal(signal.SIGKILL)
        return {"targets": targets}


@dataclass
class Hang(Fault):
    """SIGSTOP a member (leader or follower) for `hold` seconds, then SIGCONT."""

    role: str = "follower"
    seconds: float | None = None  # None: drawn from HOLD_RANGE by the run's seed
    _proc: Proc | None = field(default=None, repr=False)

    HOLD_RANGE = (1.0, 3.0)

    def __post_init__(self) -> None:
        self.kind = f"hang-{self.role}"

    def begin(self, w: World) -> dict[str, Any]:
        self.hold = self.seconds if self.seconds is not None else round(
            w.rng.uniform(*self.HOLD_RANGE), 2)
        target = w.pick(self.role)
        self._proc = w.proc(target)
        if self._proc is None or not self._proc.signal(signal.SIGSTOP):
            raise FaultError(f"no live etcd process for {target}")
        return {"targets": [target], "hold": self.hold}

    def end(self, w: World) -> None:
        if self._proc is not None:
            self._proc.signal(signal.SIGCONT)  # not sent if the daemon replaced it meanwhile
            self._proc = None


@dataclass
class Wipe(Fault):
    """A member loses its disk: SIGSTOP, delete its data dir, SIGKILL.

    Stopped first so that the daemon cannot restart it on its data between the
    kill and the delete.
    """

    role: str = "any"

    def __post_init__(self) -> None:
        self.kind = "wipe-member"

    def begin(self, w: World) -> dict[str, Any]:
        target = w.pick(self.role)
        p = w.proc(target)
        if p is None or not p.signal(signal.SIGSTOP):
            raise FaultError(f"no live etcd process for {target}")
        t0 = time.monotonic()
        shutil.rmtree(w.cluster.data_dir(target))
        deleted = time.monotonic() - t0
        p.signal(signal.SIGKILL)
        return {"targets": [target], "delete_s": round(deleted, 3)}


@dataclass
class DiskFull(Fault):
    """A member's disk fills to the last byte for `hold` s, then is freed.

    Under the workload's writes etcd's next commit fails with ENOSPC and it
    exits; every restart fails while the disk is full. After the free, the
    daemon must restart it by itself.
    """

    role: str = "any"
    seconds: float | None = None  # None: drawn from HOLD_RANGE by the run's seed
    _target: str = field(default="", repr=False)
    _proc: Proc | None = field(default=None, repr=False)

    HOLD_RANGE = (2.0, 6.0)

    def __post_init__(self) -> None:
        self.kind = "disk-full"

    def begin(self, w: World) -> dict[str, Any]:
        if w.disks is None:
            raise FaultError("disk-full needs the members on tmpfs disks (Soak(disks=...))")
        self.hold = self.seconds if self.seconds is not None else round(
            w.rng.uniform(*self.HOLD_RANGE), 2)
        target = w.pick(self.role)
        if not w.disks.has(target):
            raise FaultError(f"{target} has no disk of its own to fill")
        self._target, self._proc = target, w.proc(target)
        return {"targets": [target], "hold": self.hold, "filled_bytes": w.disks.fill(target)}

    def end(self, w: World) -> None:
        if self._target and w.disks is not None:
            # etcd fails only when it must allocate (its WAL is preallocated, bbolt reuses
            # free pages): say whether it did
            self.after["etcd_exited"] = self._proc is None or not self._proc.alive()
            w.disks.free(self._target)
            self._target = ""


@dataclass
class Swap(Fault):
    """Replace one member (random) by a new one in [[members]], optionally under a fault."""

    under: Fault | None = None

    def __post_init__(self) -> None:
        self.kind = "swap-under-fault" if self.under is not None else "swap"

    def begin(self, w: World) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.under is not None:
            details["under"] = {"kind": self.under.kind, **self.under.begin(w)}
            self.hold = self.under.hold
        leaving = w.rng.choice(w.names)
        leader = w.leader()
        details.update({"leaving": leaving, "joining": w.swap(leaving),
                        "leaving_was_leader": leaving == leader})
        return details

    def end(self, w: World) -> None:
        if self.under is not None:
            self.under.end(w)
            self.after.update(self.under.after)


SWAP_STEP_EVENTS = 11  # op_step events of a plain swap: traffic, stop x2, remove x2, add x2, ...
LAST_SWAP_OP = "promote-member"  # a swap with fewer steps is killed after this one at the latest


@dataclass
class DaemonKilledMidSwap(Fault):
    """A swap, and the daemon SIGKILLed right after its k-th step (k random), then restarted."""

    def __post_init__(self) -> None:
        self.kind = "daemon-killed-mid-swap"

    def begin(self, w: World) -> dict[str, Any]:
        k = w.rng.randint(1, SWAP_STEP_EVENTS - 1)
        extra_delay = round(w.rng.uniform(0.0, 0.02), 4)
        tail = DaemonLogTail(w.cluster.daemon_log)
        leaving = w.rng.choice(w.names)
        leaving_was_leader = leaving == w.leader()
        new = w.swap(leaving)
        steps: list[str] = []
        deadline = time.monotonic() + 60
        while len(steps) < k and not any(s.startswith(LAST_SWAP_OP) for s in steps):
            if time.monotonic() > deadline:
                raise FaultError(f"the swap {leaving} -> {new} logged only {steps} in 60 s")
            steps += [f"{e.get('op')}:{e.get('step')}" for e in tail.new()
                      if e.get("event") == "op_step"]
            time.sleep(0.005)
        time.sleep(extra_delay)  # a random moment after the k-th step ended
        w.kill_daemon()
        steps += [f"{e.get('op')}:{e.get('step')}" for e in tail.new()
                  if e.get("event") == "op_step"]
        w.start_daemon()
        return {"leaving": leaving, "joining": new, "leaving_was_leader": leaving_was_leader,
                "killed_after_step": k, "steps_done": steps}

"""The operator's restore, killed mid-way and run again, under load (a soak fault)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckeetcd.nodes.local import resolve_etcdutl_binary
from tests.harness import Cluster
from tests.soak.nemesis import DaemonLogTail, Fault, FaultError, World

RESTORE_STEPS = 9  # op_step events of a restore: mark, stop, archive, tls, restore, start, ...
CREATED = re.compile(r"created backup (\S+)")


@dataclass
class RestoreKilledMidWay(Fault):
    """A backup under load; later the operator's restore from it, killed (SIGKILL) right
    after its k-th step (k random, plus 0-20 ms), then run again to the end (the markers
    it left say to), then the daemon started again.

    What the workload wrote after the snapshot is gone: `after["rollbacks"]` gives the
    checker the snapshot's revision and when each run's restored members started.
    """

    AFTER_SNAPSHOT = 0.3  # s of writes after the snapshot (the restore drops them)

    def __post_init__(self) -> None:
        self.kind = "restore-killed-mid-way"

    def begin(self, w: World) -> dict[str, Any]:
        k = w.rng.randint(1, RESTORE_STEPS - 1)
        extra_delay = round(w.rng.uniform(0.0, 0.02), 4)
        c = w.cluster
        folder = c.root / "soak" / "backups"
        r = c.cli("etcd", "local-backup", f"-dir={folder}", "--max-backups=1")
        m = CREATED.match(r.stdout)
        if r.returncode != 0 or not m:
            raise FaultError(f"local-backup failed ({r.returncode}): {r.stderr[-500:]}")
        snap = folder / m.group(1)
        st = subprocess.run([resolve_etcdutl_binary(c.config.etcd.binary), "snapshot", "status",
                             "-w", "json", str(snap)], capture_output=True, text=True,
                            timeout=60)
        if st.returncode != 0:
            raise FaultError(f"etcdutl snapshot status {snap}: {st.stderr[-500:]}")
        revision = int(json.loads(st.stdout)["revision"])
        time.sleep(self.AFTER_SNAPSHOT)
        if c.stop_daemon() not in (0, -signal.SIGTERM, None):  # the restore refuses to run
            # beside it
            raise FaultError(f"the daemon did not stop cleanly ({c.daemon_died()})")
        # Nothing acknowledged before a run's members started comes from the cluster it
        # restored. A killed run that got that far had its own cluster, which served (from
        # the snapshot) until the second run dropped it again: two rollbacks. Recorded as
        # each run restores, so that a run failing later still tells the checker (else the
        # writes the restore dropped would count as lost).
        self.after["rollbacks"] = []
        steps, killed, _ = self._restore(c, snap, k, extra_delay, revision)
        self._restore(c, snap, None, 0.0, revision)  # the operator runs it again
        w.start_daemon()
        return {"snapshot_revision": revision, "killed_after_step": k, "killed": killed,
                "steps_done": steps}

    def _restore(self, c: Cluster, snap: Path, kill_after: int | None, extra_delay: float,
                 revision: int) -> tuple[list[str], bool, float]:
        """Run `ckeetcd restore`; with `kill_after`, SIGKILL it right after that many
        op_step events. Returns the steps it logged, whether it was killed before it
        ended by itself, and when (monotonic) its restore-data step was seen done: its
        members start only after that."""
        cmd = [sys.executable, "-m", "ckeetcd.cli.main", "restore", "--from", str(snap), "--yes",
               "--force", "--config", str(c.config_path), "--log-format", "json"]
        log = c.root / "soak" / "restore.log"
        steps: list[str] = []
        restored_at = 0.0
        with open(log, "ab") as out:
            tail = DaemonLogTail(log)  # from the end of the earlier restores' lines
            p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while (kill_after is None or len(steps) < kill_after) and p.poll() is None:
            if time.monotonic() > deadline:
                p.kill()
                p.wait(30)
                raise FaultError(f"the restore logged only {steps} in 180 s")
            for e in tail.new():
                if e.get("event") == "op_step":
                    steps.append(str(e.get("step")))
                    if e.get("step") == "restore-data" and e.get("outcome") == "ok":
                        restored_at = time.monotonic()
                        self.after["rollbacks"].append({"revision": revision,
                                                        "end": restored_at})
            time.sleep(0.005)
        if kill_after is None:
            steps += [str(e.get("step")) for e in tail.new() if e.get("event") == "op_step"]
            if p.wait(30) != 0 or not restored_at:
                raise FaultError(f"the restore exited {p.returncode} after {steps}: see {log}")
            return steps, False, restored_at
        time.sleep(extra_delay)
        killed = p.poll() is None
        p.kill()
        p.wait(30)
        steps += [str(e.get("step")) for e in tail.new() if e.get("event") == "op_step"]
        return steps, killed, restored_at

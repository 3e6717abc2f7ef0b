"""Kill the daemon after each step of a replacement; a restarted one finishes the job.

CKEETCD_FAILPOINT="op:step" makes the daemon SIGKILL itself right after that
step ends. The restarted daemon (no failpoint) must converge to the desired
members with no quorum loss and never a second learner.
"""

from __future__ import annotations

import signal
import threading

import pytest

from tests.harness import Cluster, Writer, wait_for

SWAP_STEPS = [
    "stop-member:stop-process",
    "stop-member:archive-data",
    "remove-member:pre-change-snapshot",
    "remove-member:member-remove",
    "add-member:pre-change-snapshot",
    "add-member:member-add",
    "start-member:install-tls",
    "start-member:start-process",
    "promote-member:member-promote",
]


class Watch:
    """Samples the cluster while a scenario runs: learner count, quorum.

    A single sample without quorum can be a leader election or a Status RPC
    that missed its deadline on a loaded machine; quorum loss counts when
    LOST_SAMPLES consecutive samples (over a second) all saw it.
    """

    LOST_SAMPLES = 3

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.max_learners = 0
        self.quorum_lost = 0
        self.samples = 0
        self._lost_run = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                _, obs = self.cluster.observe()
            except Exception:
                continue
            self.samples += 1
            self.max_learners = max(self.max_learners, len(obs.learners()))
            if obs.members is not None and not obs.has_quorum():
                self._lost_run += 1
                if self._lost_run == self.LOST_SAMPLES:
                    self.quorum_lost += 1
            else:
                self._lost_run = 0

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.parametrize("failpoint", SWAP_STEPS)
def test_swap_survives_daemon_killed_after(cluster: Cluster, failpoint: str) -> None:
    cluster.stop_daemon()
    cluster.write_config(["m1", "m2", "m4"])
    with Watch(cluster) as watch, Writer(cluster, lambda: ["m1", "m2"]) as writer:
        mark = cluster.mark()
        daemon = cluster.start_daemon(env={"CKEETCD_FAILPOINT": failpoint})
        wait_for(lambda: daemon.poll() is not None, 60, f"daemon to hit failpoint {failpoint}")
        assert daemon.returncode == -signal.SIGKILL
        hit = [e for e in cluster.events("failpoint", since=mark)]
        assert [f"{e['op']}:{e['step']}" for e in hit] == [failpoint]
        cluster.start_daemon()
        cluster.wait_healthy(["m1", "m2", "m4"], timeout=90)
    assert watch.samples > 0
    assert watch.max_learners <= 1
    assert watch.quorum_lost == 0
    assert writer.lost("m4") == []
    r = cluster.etcdctl("member", "list")
    assert "m3" not in r.stdout
    assert cluster.member_pid("m3") is None


@pytest.mark.parametrize("damage", ["peer.key missing", "peer.key of another pair"])
def test_member_restarts_after_a_crash_left_its_tls_files_partial(cluster: Cluster,
                                                                  damage: str) -> None:
    """A daemon killed inside install-tls leaves some of a member's five TLS files new and
    some missing or old (the soak found one killed after peer.crt, before peer.key). The
    certificates alone look fine; the next daemon must re-issue the set, not start etcd
    on it forever (etcd exits at once: "open .../peer.key: no such file or directory").
    """
    import os

    cluster.stop_daemon()
    pid = cluster.member_pid("m3")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: cluster.member_pid("m3") is None, 20, "m3 gone")
    tls = cluster.state_dir / "members" / "m3" / "tls"
    if damage == "peer.key missing":
        (tls / "peer.key").unlink()
    else:  # a crash between a new key and its new certificate
        (tls / "peer.key").write_bytes((tls / "server.key").read_bytes())
    cluster.start_daemon()
    cluster.wait_healthy(["m1", "m2", "m3"], timeout=60)
    assert (tls / "peer.key").stat().st_mode & 0o777 == 0o600
    assert (tls / "peer.key").read_bytes() != (tls / "server.key").read_bytes()

"""A member that is removed and added again does not inherit the old one's restart hold.

Found by the long soak: a member that had been killed, hung and filled
again and again (never healthy for a minute in between) carried a streak
of 9 starts, so a hold of 256 s. Its data was then wiped; the daemon removed
it, and then would not add the new, empty member under the same name until
the old member's hold ended ("not adding m30 yet"): minutes with one member
less. The streak here is what a daemon restart carries over in
`STATE_DIR/starts.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from tests.harness import Cluster, wait_for

pytestmark = pytest.mark.usefixtures("real_etcd")
NAMES = ["m1", "m2", "m3"]


def test_a_wiped_member_is_added_again_without_the_old_ones_backoff(cluster: Cluster) -> None:
    c = cluster
    c.stop_daemon()
    held_until = time.time() + 256
    (c.state_dir / "starts.json").write_text(json.dumps(
        {"members": {"m2": {"count": 9, "last": held_until - 256, "last_exit": None}}}))
    mark = c.mark()
    c.start_daemon()
    pid = c.member_pid("m2")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # so that it cannot be restarted on its data meanwhile
    shutil.rmtree(c.data_dir("m2"))
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: [e for e in c.events("op", since=mark)
                      if e["op"] == "remove-member" and e["outcome"] == "ok"], 60,
             "m2 removed", abort=c.daemon_died)
    c.wait_healthy(NAMES, timeout=90)
    started = [e for e in c.events("op", since=mark)
               if e["op"] == "start-member" and e["targets"] == "m2" and e["outcome"] == "ok"]
    assert started, [e["op"] for e in c.events("op", since=mark)]
    assert not [e for e in c.events("cycle", since=mark) if "not adding m2" in e["reason"]]

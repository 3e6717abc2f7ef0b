"""An SSH connection closed while other calls open sessions on it: only OSErrors.

Found by the slow-link lab soak (tests/test_partition.py): a daemon exited with a
traceback, asyncssh's `assert self._conn is not None` (channel.get_connection)
from `conn.run`, during an ordinary TLS check. On a slow link a probe's deadline
passes, its cancelled call closes the node's shared connection, and a call that
is opening a session on that connection at that moment gets asyncssh's
AssertionError instead of a connection error. Nothing caught it: the daemon died.

Here against a real sshd (a namespace-lab host): rounds of concurrent commands
on one SSHNode while one more call is cancelled at once. Every failure must be
an SSHError (an OSError: the node unreachable for this call), never anything else.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.multihost import PY
from tests.netns import Lab

ROUNDS, CONCURRENT = 60, 8

CLIENT = """
import asyncio, collections, json, sys
from ckeetcd.core.config import SSHConfig
from ckeetcd.nodes.sshnode import SSHNode

async def main(identity, known_hosts, address, rounds, concurrent):
    node = SSHNode(address, SSHConfig(identity_file=identity, known_hosts=known_hosts,
                                      connect_timeout=2.0))
    seen = collections.Counter()

    async def one():
        try:
            await node.run("true")
            seen["ok"] += 1
        except OSError:
            seen["OSError"] += 1
        except Exception as e:
            seen[type(e).__name__] += 1

    for n in range(rounds):
        try:
            await node.connect()
        except OSError:
            await asyncio.sleep(1.1)  # the reconnect back-off
            continue
        calls = [asyncio.create_task(one()) for _ in range(concurrent)]
        victim = asyncio.create_task(node.run("sleep 5"))
        for _ in range(n % 6):  # cancel it at different points of the others' opening
            await asyncio.sleep(0)
        victim.cancel()
        await asyncio.gather(*calls)
        await asyncio.gather(victim, return_exceptions=True)
    print(json.dumps(seen))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
"""


def test_a_connection_closed_under_opening_sessions_gives_only_connection_errors(
        lab: Lab) -> None:
    root = Path(__file__).resolve().parents[1]
    r = lab.exec("h2", PY, "-c", CLIENT, str(lab.identity), str(lab.known_hosts),
                 lab.host("h1").address, str(ROUNDS), str(CONCURRENT), timeout=300,
                 env={"PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr[-3000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen.get("ok", 0) > 0, seen  # the commands do run
    assert set(seen) <= {"ok", "OSError"}, f"not a connection error: {seen}"

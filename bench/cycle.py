"""observe + decide cycle time for 3, 5 and 7 members (target <= 20 ms).

Each cluster is bootstrapped by the daemon, which is then stopped so nothing
changes under the measurement. In this process, as the daemon does
(ckeetcd.loop.daemon.make_env: a ClientPool of cached TLS channels and an
Observer), we time `Observer.observe(desired)` + `decide(desired, observed)`:

- probe: observe(deep=False), what runs every probe_interval;
- deep: observe(deep=True), the periodic full cycle (RBAC re-checked).

Baseline, same pool, same loop: the bare RPCs any observer needs, i.e. one
Status per member, concurrently, then one MemberList.

Where the deep cycle's time goes: the RBAC check alone (ckeetcd's
rbac_in_place; etcd 3.5 serves AuthStatus, UserGet and RoleGet through a raft
round each), one Alarm RPC, and single Status / UserGet round trips.

Run: .venv/bin/python bench/cycle.py [--iterations 300] [--sizes 3,5,7]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from _common import Cadence, bench_cluster, stop_daemon, summary, write_result
from ckeetcd.loop.env import make_env

from ckeetcd.core.decide import decide
from ckeetcd.core.model import Desired
from ckeetcd.etcd.rbac import ROOT, rbac_in_place

TARGET_MS = 20.0
WARMUP = 20


async def timed(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def measure(config: Any, iterations: int) -> dict[str, Any]:
    env = make_env(config, readonly=True)
    desired = Desired.from_config(config)
    pool, observer = env.pool, env.observer
    urls = [d.client_url for d in desired.members]

    async def baseline() -> None:
        await asyncio.gather(*(pool.get(u).status(timeout=1.0) for u in urls))
        await pool.get(urls[0]).member_list()

    async def cycle(deep: bool) -> str:
        observed = await observer.observe(desired, deep=deep)
        return decide(desired, observed).phase

    try:
        phases: set[str] = set()
        for _ in range(WARMUP):
            phases.add(await cycle(False))
            await baseline()
        probe, deep, base, decide_only = [], [], [], []
        for i in range(iterations):
            t = time.perf_counter()
            phases.add(await cycle(False))
            probe.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            await baseline()
            base.append((time.perf_counter() - t) * 1000)
            if i % 3 == 0:
                t = time.perf_counter()
                phases.add(await cycle(True))
                deep.append((time.perf_counter() - t) * 1000)
        observed = await observer.observe(desired)
        leader = next(m for m in observed.members or () if m.id == observed.leader_id())
        first = next(m for m in observed.members or () if not m.learner)
        rbac_client = pool.get(first.client_urls[0])  # the member the observer asks
        assert await rbac_in_place(rbac_client, desired)
        n = max(iterations // 3, 30)
        rbac_seq = await timed(lambda: rbac_in_place(rbac_client, desired), n)
        alarm_rt = await timed(lambda: rbac_client.alarms(), n)
        status_rt = await timed(lambda: rbac_client.status(), n)
        user_get_rt = await timed(lambda: rbac_client.user_get(ROOT), n)
        for _ in range(iterations):
            t = time.perf_counter()
            decide(desired, observed)
            decide_only.append((time.perf_counter() - t) * 1000)
        return {
            "phases": sorted(phases),
            "probe_ms": summary(probe, 3),
            "deep_ms": summary(deep, 3),
            "baseline_rpcs_ms": summary(base, 3),
            "decide_only_ms": summary(decide_only, 4),
            "rbac_check_ms": summary(rbac_seq, 3),
            "alarm_rpc_ms": summary(alarm_rt, 3),
            "status_rpc_ms": summary(status_rt, 3),
            "user_get_rpc_ms": summary(user_get_rt, 3),
            "rbac_asked_leader": first.id == leader.id,
        }
    finally:
        await env.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--sizes", default="3,5,7")
    args = ap.parse_args()
    cadence = Cadence.shipped()
    sizes = [int(x) for x in args.sizes.split(",")]
    results: dict[str, Any] = {}
    for n in sizes:
        names = [f"m{i}" for i in range(1, n + 1)]
        with bench_cluster(names, cadence, f"cycle{n}") as c:
            stop_daemon(c)
            r = asyncio.run(measure(c.config, args.iterations))
        r["ratio_probe_to_baseline"] = round(r["probe_ms"]["median"]
                                             / r["baseline_rpcs_ms"]["median"], 2)
        r["met_probe"] = r["probe_ms"]["p95"] <= TARGET_MS
        r["met_deep"] = r["deep_ms"]["p95"] <= TARGET_MS
        results[str(n)] = r
        print(f"{n} members: probe median {r['probe_ms']['median']:.2f} ms "
              f"p95 {r['probe_ms']['p95']:.2f}; deep median {r['deep_ms']['median']:.2f} "
              f"p95 {r['deep_ms']['p95']:.2f}; bare RPCs median "
              f"{r['baseline_rpcs_ms']['median']:.2f} p95 {r['baseline_rpcs_ms']['p95']:.2f}; "
              f"decide alone {r['decide_only_ms']['median'] * 1000:.0f} us; "
              f"phases {r['phases']}", flush=True)
        print(f"   deep's RBAC check {r['rbac_check_ms']['median']:.2f} ms "
              f"one Alarm {r['alarm_rpc_ms']['median']:.2f} ms; "
              f"one Status {r['status_rpc_ms']['median']:.2f} ms, one UserGet "
              f"{r['user_get_rpc_ms']['median']:.2f} ms", flush=True)
    met_probe = all(r["met_probe"] for r in results.values())
    met_deep = all(r["met_deep"] for r in results.values())
    path = write_result("cycle", {"unit": "milliseconds",
                                  "target": f"observe+decide p95 <= {TARGET_MS} ms",
                                  "iterations": args.iterations, "met_probe": met_probe,
                                  "met_deep": met_deep, "sizes": results})
    print(f"\ncycle: target p95 <= {TARGET_MS} ms for {sizes}: probe cycle "
          f"{'met' if met_probe else 'NOT met'}, deep cycle {'met' if met_deep else 'NOT met'}")
    if path:
        print(f"  -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

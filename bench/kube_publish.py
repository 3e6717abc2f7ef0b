"""How fast the published endpoints follow the cluster: kill -9 and membership changes.

One 3-member TLS + RBAC cluster bootstrapped by its daemon (the [daemon]
cadences of config/local.toml unless --probe-interval), publishing through a
real kubeconfig into the Kubernetes API double of tests/kubeapi.py (HTTPS,
bearer token, on its own loopback address).

- kill: a member is killed with SIGKILL (t0). Measured, in the same run:
  `detect`, t0 -> the daemon's first "health" log event that shows it
  unhealthy (the daemon's own detection); `slice`, t0 -> the first version of
  EndpointSlice cke-etcd stored by the double with its endpoint ready=false;
  `endpoints`, the same for Endpoints cke-etcd (address under
  notReadyAddresses); `after_detection` = slice - detect. The daemon restarts
  the member; `back_after_detection` is from the first "health" event showing
  it healthy again to the slice version with ready=true.
- swap: the config replaces the newest member (m3 -> m4, ...). `removed`: the
  daemon's remove-member op event -> first slice version without the old
  address; `joined`: its promote-member op event -> first slice version with
  the new address ready.

Target (issue 5): the slice reflects a death <= 200 ms after detection.
Timestamps: the daemon's JSON log (UTC ISO, microseconds) and the double's
time.time() at storage; same machine clock.

Run: .venv/bin/python bench/kube_publish.py [--reps 10] [--swaps 2] [--probe-interval S]
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import BenchCluster, Cadence, cadence_parser, summary, wait_for, write_result

from tests.kubeapi import KubeAPIServer, slice_endpoints

TARGET = 0.200
SLICE, EP = "EndpointSlice", "Endpoints"


def when(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def health_event(c: BenchCluster, name: str, healthy: bool, since: int,
                 after: float = 0.0) -> dict[str, Any] | None:
    for e in c.events("health", since=since):
        if when(e) >= after and any(m["name"] == name and m["healthy"] is healthy
                                    for m in e["members"]):
            return e
    return None


def op_event(c: BenchCluster, op: str, since: int) -> dict[str, Any] | None:
    return next((e for e in c.events("op", since=since)
                 if e["op"] == op and e["outcome"] == "ok"), None)


def first_version(api: KubeAPIServer, kind: str, after: float, test: Any) -> float | None:
    for t, obj in api.history(kind, "cke-etcd"):
        if t >= after and obj is not None and test(obj):
            return t
    return None


def not_ready_in_endpoints(address: str) -> Any:
    def test(obj: dict[str, Any]) -> bool:
        return any(a["ip"] == address for s in obj.get("subsets") or []
                   for a in s.get("notReadyAddresses") or [])
    return test


def all_ready(c: BenchCluster, api: KubeAPIServer, names: list[str]) -> bool:
    want = {c.address_of(n) for n in names}
    return slice_endpoints(api.get(SLICE, "cke-etcd")) == dict.fromkeys(want, True)


def kill_rep(c: BenchCluster, api: KubeAPIServer, names: list[str], victim: str) -> dict[str, Any]:
    wait_for(lambda: all_ready(c, api, names), 60, "all published ready", abort=c.daemon_died)
    address = c.address_of(victim)
    pid = c.member_pid_fast(victim)
    assert pid, f"{victim} is not running"
    mark = c.mark()
    t0 = time.time()
    os.kill(pid, signal.SIGKILL)
    seen = wait_for(lambda: health_event(c, victim, False, mark), 30, "detection")
    t_slice = wait_for(lambda: first_version(
        api, SLICE, t0, lambda o: slice_endpoints(o).get(address) is False), 30, "slice")
    t_ep = wait_for(lambda: first_version(api, EP, t0, not_ready_in_endpoints(address)), 30,
                    "endpoints")
    back = wait_for(lambda: health_event(c, victim, True, mark, after=when(seen)), 60,
                    "restarted member healthy", abort=c.daemon_died)
    t_back = wait_for(lambda: first_version(
        api, SLICE, when(back), lambda o: slice_endpoints(o).get(address) is True), 30,
        "slice ready again")
    detect = when(seen) - t0
    return {
        "member": victim,
        "detect": round(detect, 4),
        "slice": round(t_slice - t0, 4),
        "endpoints": round(t_ep - t0, 4),
        "after_detection": round(t_slice - when(seen), 4),
        "endpoints_after_detection": round(t_ep - when(seen), 4),
        "back_after_detection": round(t_back - when(back), 4),
    }


def swap_rep(c: BenchCluster, api: KubeAPIServer, names: list[str], old: str,
             new: str) -> dict[str, Any]:
    wait_for(lambda: all_ready(c, api, names), 60, "all published ready", abort=c.daemon_died)
    old_ip, new_ip = c.address_of(old), c.fresh_address_of(new)
    mark = c.mark()
    t0 = time.time()
    names[:] = [*names[:-1], new]
    c.write_config(names)
    removed = wait_for(lambda: op_event(c, "remove-member", mark), 90, "remove-member",
                       abort=c.daemon_died)
    promoted = wait_for(lambda: op_event(c, "promote-member", mark), 90, "promote-member",
                        abort=c.daemon_died)
    t_gone = wait_for(lambda: first_version(
        api, SLICE, t0, lambda o: old_ip not in slice_endpoints(o)), 30, "old gone")
    t_join = wait_for(lambda: first_version(
        api, SLICE, t0, lambda o: slice_endpoints(o).get(new_ip) is True), 30, "new ready")
    return {
        "from": old, "to": new,
        "removed_after_op": round(t_gone - when(removed), 4),
        "joined_after_op": round(t_join - when(promoted), 4),
        "config_to_published": round(t_join - t0, 4),
    }


def main() -> int:
    ap = cadence_parser(__doc__)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--swaps", type=int, default=2)
    args = ap.parse_args()
    cadence = Cadence.from_args(args.probe_interval)
    names = ["m1", "m2", "m3"]
    root = Path(tempfile.mkdtemp(prefix="ckeetcd-bench-kube-"))
    (root / "api").mkdir()
    (root / "cluster").mkdir()
    kills: list[dict[str, Any]] = []
    swaps: list[dict[str, Any]] = []
    ok = False
    try:
        with KubeAPIServer(root / "api") as api:
            c = BenchCluster(root / "cluster", names, cadence)
            try:
                c.write_config(names, extra=f'[kubernetes]\nkubeconfig = "{api.kubeconfig}"\n')
                c.start_daemon()
                c.wait_healthy(names, timeout=90)
                for i in range(args.reps):
                    r = kill_rep(c, api, names, names[i % len(names)])
                    kills.append(r)
                    print(f"kill {i + 1}/{args.reps} {r['member']}: detect {r['detect']:.3f}s, "
                          f"slice {r['slice']:.3f}s (+{r['after_detection'] * 1000:.1f} ms), "
                          f"endpoints +{r['endpoints_after_detection'] * 1000:.1f} ms, "
                          f"ready again +{r['back_after_detection'] * 1000:.1f} ms", flush=True)
                for i in range(args.swaps):
                    r = swap_rep(c, api, names, names[-1], f"m{4 + i}")
                    swaps.append(r)
                    print(f"swap {r['from']}->{r['to']}: gone +{r['removed_after_op'] * 1000:.1f}"
                          f" ms after remove-member, ready +{r['joined_after_op'] * 1000:.1f} ms "
                          f"after promote-member", flush=True)
                ok = True
            finally:
                c.cleanup()
    finally:
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root} for inspection", file=sys.stderr)

    after = summary([r["after_detection"] for r in kills])
    result = {
        "unit": "seconds",
        "target": f"EndpointSlice ready=false <= {TARGET * 1000:.0f} ms after the daemon's "
                  "detection (its 'health' event)",
        "kill": {
            "detect": summary([r["detect"] for r in kills]),
            "slice": summary([r["slice"] for r in kills]),
            "endpoints": summary([r["endpoints"] for r in kills]),
            "after_detection": after,
            "endpoints_after_detection": summary([r["endpoints_after_detection"]
                                                  for r in kills]),
            "back_after_detection": summary([r["back_after_detection"] for r in kills]),
        },
        "swap": {
            "removed_after_op": summary([r["removed_after_op"] for r in swaps]),
            "joined_after_op": summary([r["joined_after_op"] for r in swaps]),
            "config_to_published": summary([r["config_to_published"] for r in swaps]),
        } if swaps else {},
        "met": after["max"] <= TARGET,
        "runs": {"kill": kills, "swap": swaps},
    }
    path = write_result("kube_publish", result, cadence)
    k = result["kill"]
    print(f"\nkube_publish (probe_interval {cadence.probe_interval}s, {args.reps} kills):")
    print(f"  detection after kill -9   median {k['detect']['median'] * 1000:.1f} ms "
          f"(max {k['detect']['max'] * 1000:.1f})")
    print(f"  slice after detection     median {after['median'] * 1000:.1f} ms, "
          f"p95 {after['p95'] * 1000:.1f}, max {after['max'] * 1000:.1f} "
          f"(target <= {TARGET * 1000:.0f} ms: {'met' if result['met'] else 'NOT met'})")
    print(f"  -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

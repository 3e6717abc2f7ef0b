"""A peer (or, with `--client`, client) CA rotation of 3 members under steady writes,
against one rolling member restart on the same cluster, in the same run.

- rotation: `ckeetcd ca rotate --peer` with the daemon running; timed from the
  command to the record saying done (new CA, every member restarted onto old +
  new, peer certificates re-issued in place, every member restarted onto the
  new CA alone, files swapped). The first run of each cluster is the one-CA
  migration (the cluster is made as ckeetcd made them before the peer CA);
  the next runs rotate the peer CA it then has.
- one restart: a rolling change that restarts every member once
  (`[etcd] heartbeat_interval` edited), of which the longest single-key stall is
  what one member restart costs writers; the stall target of issue 15 is that
  a rotation's stall is no longer than this one.

With `--client` the cluster starts with separate CAs and `[tls] rotation_grace` of
GRACE seconds (part of the rotation time: the old user certificates' grace);
results: bench/results/ca_rotate_client.json.

Load: one writer all along that behaves as a kube-apiserver
(bench/filewriter.py): it follows the etcd servers file the daemon keeps, so a
member taken out of the file before its restart gets no more writes. For the
client CA it is also handed the daemon's current client files (the bundle,
then the re-issued root certificate) as they change, as an operator hands
them to a kube-apiserver. Figures: rotation time;
failed write attempts; the longest stall (time one key took to be
acknowledged); acknowledged keys lost (must be 0). Results:
bench/results/ca_rotate.json.

    .venv/bin/python bench/ca_rotate.py [--runs 3] [--client]
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from _common import (
    BenchCluster,
    Cadence,
    bench_cluster,
    cadence_parser,
    wait_for,
    write_result,
    writer_runs,
)
from filewriter import ServersFileWriter, servers_file
from filewriter import apiserver_section as apiserver

from ckeetcd.pki import ensure_ca

NAMES = ["m1", "m2", "m3"]
GRACE = 5  # seconds, --client


def role_view(c: BenchCluster, role: str) -> dict[str, Any] | None:
    r = c.cli("status", "--output", "json")
    rotation = json.loads(r.stdout)["rotation"] if r.returncode == 0 else None
    return rotation["roles"].get(role) if rotation else None


def writer(c: BenchCluster, role: str) -> ServersFileWriter:
    return ServersFileWriter(c, servers_file(c), follow_tls=role == "client")


def rotate(c: BenchCluster, role: str) -> dict[str, Any]:
    with writer(c, role) as w:
        wait_for(lambda: len(w.acked) > 50, 30, "writes flowing")
        start = time.monotonic()
        r = c.cli("ca", "rotate", f"--{role}")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: (p := role_view(c, role)) is not None and p["done"], 300,
                 "rotation done", interval=0.1)
        total = time.monotonic() - start
    return {"total_s": round(total, 3), "failed_writes": w.failures,
            "longest_stall_s": round(w.max_outage, 3), "lost": len(w.lost(NAMES[0])),
            "acked": len(w.acked)}


def restarts(c: BenchCluster, role: str, heartbeat: int, tls: str) -> dict[str, Any]:
    """Every member restarted once by a rolling change; its longest stall."""
    with writer(c, role) as w:
        wait_for(lambda: len(w.acked) > 50, 30, "writes flowing")
        mark = c.mark()
        start = time.monotonic()
        c.write_config(NAMES, extra=f"[etcd]\nheartbeat_interval_ms = {heartbeat}\n"
                                    f"election_timeout_ms = {heartbeat * 10}\n{tls}")

        def restarted() -> bool:
            ok = [e for e in c.events("op", since=mark)
                  if e.get("op") == "restart-member" and e.get("outcome") == "ok"]
            return len(ok) >= len(NAMES)
        wait_for(restarted, 300, "every member restarted", interval=0.1)
        c.wait_healthy(NAMES)
        total = time.monotonic() - start
    return {"total_s": round(total, 3), "failed_writes": w.failures,
            "longest_stall_s": round(w.max_outage, 3), "lost": len(w.lost(NAMES[0])),
            "acked": len(w.acked)}


def main() -> None:
    ap = cadence_parser(__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--client", action="store_true", help="rotate the client CA")
    args = ap.parse_args()
    cadence = Cadence.from_args(args.probe_interval)
    role = "client" if args.client else "peer"
    tls = f'[tls]\nrotation_grace = "{GRACE}s"\n' if args.client else ""
    runs: dict[str, list[dict[str, Any]]] = {"rotation": [], "restarts": []}
    with bench_cluster(NAMES, cadence, "ca-rotate", start=False) as c:
        c.write_config(NAMES, extra=tls + apiserver(c))
        if not args.client:  # a one-CA cluster, as made before the peer CA
            ensure_ca(c.state_dir / "pki", "test")
            (c.state_dir / "history.jsonl").write_text('{"event": "made before the peer CA"}\n')
        c.start_daemon()
        c.wait_healthy(NAMES, timeout=90)
        for i in range(args.runs):  # alternating on one cluster, so drift hits both alike
            runs["rotation"].append(rotate(c, role))
            runs["restarts"].append(restarts(c, role, 100 + 10 * (i + 1), tls + apiserver(c)))
            print(f"run {i + 1}: rotation {runs['rotation'][-1]}  "
                  f"restarts {runs['restarts'][-1]}", flush=True)
    out: dict[str, Any] = {"when": dt.datetime.now(dt.timezone.utc).isoformat(),
                           "cadence": cadence.__dict__,
                           "note": f"client CA rotations, {GRACE}s grace included"
                           if args.client else "run 1's rotation is the one-CA migration"}
    for k, rs in runs.items():
        out[k] = writer_runs(rs)
    out["stall_ratio"] = round(out["rotation"]["longest_stall_s"]["median"]
                               / max(out["restarts"]["longest_stall_s"]["median"], 1e-9), 3)
    write_result("ca_rotate_client" if args.client else "ca_rotate", out, cadence)
    print(json.dumps({k: out[k] for k in ("stall_ratio",)}, indent=1))


if __name__ == "__main__":
    main()

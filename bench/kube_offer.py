"""What `EndpointsTask.offer()` costs the daemon's loop while the Kubernetes API is down.

    .venv/bin/python bench/kube_offer.py [--offers 2000]

The daemon offers every observed snapshot to the endpoints task from its control
loop; an offer must never wait on the API. In one process, on one loop, with the
endpoints task running against the Kubernetes API double of tests/kubeapi.py:

- up: offers while the API answers (the baseline);
- down: offers while the API hangs every request (`hang`) and the task retries.

Each offer is timed alone (perf_counter around the call); the result has the
median, p95 and max per mode and the ratio down/up of the medians and of the
p95s. This figure used to be a `< 5 ms` limit in tests/test_kube_endpoints.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

from _common import summary, write_result
from structlog.testing import capture_logs

from tests.builders import cluster
from tests.kubeapi import KubeAPIServer
from tests.test_kube_endpoints import Harness, eventually, make_config


async def offers(h: Harness, n: int) -> list[float]:
    out = []
    for i in range(n):
        out.append(h.feed())
        if i % 20 == 19:
            await asyncio.sleep(0.005)  # let the task run between bursts, as the daemon does
    return out


async def measure(root: Path, n: int) -> dict[str, object]:
    with KubeAPIServer(root / "api") as api, capture_logs() as logs:
        h = Harness(api, make_config(root, api.kubeconfig), logs)
        h.feed()
        run = asyncio.create_task(h.task.run())
        try:
            await eventually(lambda: h.task.passes >= 1, 15, "a first publication")
            up = await offers(h, n)
            await asyncio.to_thread(api.down, "hang")
            h.feed(o=cluster(["m1", "m2", "m3"], dead=["m3"]))  # something to publish
            await asyncio.sleep(0.5)  # requests are in flight and hanging
            down = await offers(h, n)
            await asyncio.to_thread(api.up)
        finally:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
    su, sd = summary(up, 6), summary(down, 6)
    return {"offer_api_up_s": su, "offer_api_hanging_s": sd,
            "ratio_median_down_vs_up": round(float(sd["median"]) / float(su["median"]), 2),
            "ratio_p95_down_vs_up": round(float(sd["p95"]) / float(su["p95"]), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--offers", type=int, default=2000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ckeetcd-bench-") as tmp:
        (Path(tmp) / "api").mkdir()
        t = time.perf_counter()
        result = asyncio.run(measure(Path(tmp), args.offers))
        result["wall_s"] = round(time.perf_counter() - t, 1)
    path = write_result("kube_offer", result)
    print(result, path)


if __name__ == "__main__":
    main()

"""The endpoints task: keep Service, Endpoints and EndpointSlice `cke-etcd` published.

A side task of the daemon (see ckeetcd.loop.sidetasks). The daemon hands it every
observation through `offer()`, which only computes the wanted objects (pure,
ckeetcd.kube.shape) and wakes `run()` when they changed; `offer()` never waits
on the Kubernetes API, so an API that is down or slow cannot delay the etcd
loop.

`run()` writes what differs:

- Change-driven: when the wanted objects change (a member died, came back,
  joined, left), each object whose content differs from the last version the
  task saw is replaced at once with that version's resourceVersion; an
  unchanged object costs no request.
- Verification: at most every `[daemon] interval` seconds (counted on the
  daemon's observations, never on a timer of its own) every object is read
  back (GET) and put back if it was edited or deleted by hand; EndpointSlices
  of ours that are no longer wanted (e.g. `<name>-ipv6` after the last IPv6
  member left) are deleted.
- Optimistic concurrency: updates carry the live resourceVersion; a 409
  Conflict (stale version, or a create that lost a race) re-reads the object
  and tries again, up to CONFLICT_RETRIES times per object and pass.
- Changes an update cannot make (a Service that lost `clusterIP: None`, a
  slice whose addressType must change) are done by delete + create, the
  delete preconditioned on the uid just read.
- Any other failure (connection refused, timeouts, 5xx, 401, bad kubeconfig)
  forgets what the task believed about the API server and retries the whole
  pass with exponential backoff (BACKOFF_START doubling up to BACKOFF_MAX).
  A 401 or an edited kubeconfig file rebuilds the client (rotated tokens).

Credentials: `[kubernetes] kubeconfig = PATH` is loaded into a private
kubernetes_asyncio Configuration (the library's global default is never
touched; the file is never written back); without it, in-cluster service
account credentials are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from ckeetcd.core.config import Config, KubernetesConfig
from ckeetcd.core.model import Desired, Observed
from ckeetcd.kube import shape
from ckeetcd.kube.shape import ENDPOINTS, SERVICE, SLICE, Obj, Objects

CONFLICT_RETRIES = 5
BACKOFF_START = 0.25
BACKOFF_MAX = 5.0
REQUEST_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0

_PATHS = {
    SERVICE: ("/api/v1", "services"),
    ENDPOINTS: ("/api/v1", "endpoints"),
    SLICE: ("/apis/discovery.k8s.io/v1", "endpointslices"),
}


def resource_path(kind: str, namespace: str, name: str | None = None) -> str:
    base, plural = _PATHS[kind]
    path = f"{base}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class KubeError(Exception):
    """A request that did not do what we asked; `status` 0 = no HTTP answer."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class KubeClient:
    """JSON over the Kubernetes API through kubernetes_asyncio's ApiClient.

    Answers are (status, body) pairs, so 404 and 409 are values, not
    exceptions; transport failures raise KubeError(status=0).
    """

    def __init__(self, api: Any, source: tuple[str, float],
                 timeout: float = REQUEST_TIMEOUT) -> None:
        self.api = api
        self.source = source  # (kubeconfig path or "in-cluster", its mtime)
        self.timeout = timeout

    @staticmethod
    async def open(kube: KubernetesConfig, timeout: float = REQUEST_TIMEOUT) -> KubeClient:
        from kubernetes_asyncio.client import ApiClient, Configuration
        from kubernetes_asyncio.config import load_kube_config
        from kubernetes_asyncio.config.incluster_config import load_incluster_config

        incluster: Any = load_incluster_config  # untyped in the library

        cfg = Configuration()
        try:
            if kube.kubeconfig is None:
                incluster(client_configuration=cfg)
            else:
                await load_kube_config(config_file=str(kube.kubeconfig),
                                       client_configuration=cfg, persist_config=False)
        except Exception as e:
            where = str(kube.kubeconfig) if kube.kubeconfig else "in-cluster config"
            raise KubeError(f"cannot load {where}: {type(e).__name__}: {e}") from e
        return KubeClient(ApiClient(configuration=cfg), credentials_source(kube), timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.api.close()

    async def request(self, method: str, path: str, body: Obj | None = None,
                      query: dict[str, str] | None = None) -> tuple[int, Obj]:
        import aiohttp

        try:
            resp = await self.api.call_api(
                path, method,
                query_params=list((query or {}).items()),
                header_params={"Accept": "application/json",
                               "Content-Type": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(total=self.timeout,
                                                       connect=CONNECT_TIMEOUT),
            )
            raw = await resp.read()
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            raise KubeError(f"{method} {path}: {type(e).__name__}: {e}") from e
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"message": raw[:200].decode("utf-8", "replace")}
        return resp.status, data if isinstance(data, dict) else {}


def credentials_source(kube: KubernetesConfig) -> tuple[str, float]:
    """What the client was built from: a changed kubeconfig file means rebuild it."""
    if kube.kubeconfig is None:
        return ("in-cluster", 0.0)
    try:
        return (str(kube.kubeconfig), kube.kubeconfig.stat().st_mtime)
    except OSError:
        return (str(kube.kubeconfig), 0.0)


def _failure(method: str, kind: str, name: str, status: int, body: Obj) -> KubeError:
    reason = body.get("reason") or ""
    message = body.get("message") or ""
    return KubeError(f"{method} {kind} {name}: {status} {reason} {message}".strip(), status)


@dataclass
class _Pass:
    """Counters of one sync pass (for the log line)."""

    writes: int = 0
    conflicts: int = 0


class EndpointsTask:
    """Publishes the members of the etcd cluster as Service/Endpoints/EndpointSlice."""

    name = "kube-endpoints"

    def __init__(self, config: Config, log: Any, *,
                 backoff_start: float = BACKOFF_START, backoff_max: float = BACKOFF_MAX,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.log = log
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.request_timeout = request_timeout
        self._kube: KubernetesConfig | None = config.kubernetes
        self._resync = config.daemon.interval
        self._want: Objects | None = None
        self._want_since = 0.0
        self._synced: Objects | None = None
        self._last_verify = float("-inf")
        self._verify_due = True
        self._wake = asyncio.Event()
        self._client: KubeClient | None = None
        # The last version of each object the API server showed us, by (kind, ns, name).
        self._seen: dict[tuple[str, str, str], Obj] = {}
        self.passes = 0

    # ---- fed by the daemon loop: never blocks ------------------------------------
    def offer(self, config: Config, desired: Desired, observed: Observed) -> None:
        self._kube = config.kubernetes
        self._resync = config.daemon.interval
        if self._kube is None:
            self._want = None
            return
        want = shape.build(self._kube, config.cluster.client_port, desired, observed)
        if want != self._want:
            self._want = want
            self._want_since = time.monotonic()
            self._wake.set()
        if time.monotonic() - self._last_verify >= self._resync:
            self._verify_due = True
            self._wake.set()

    # ---- the task ----------------------------------------------------------------
    async def run(self) -> None:
        backoff = self.backoff_start
        failing_since: float | None = None
        failures = 0
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                want, kube = self._want, self._kube
                if want is None or kube is None:
                    continue
                verify = self._verify_due
                if want == self._synced and not verify:
                    continue
                self._verify_due = False
                since = self._want_since
                start = time.monotonic()
                try:
                    client = await self._ensure_client(kube)
                    stats = await self._sync(client, want, verify)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    failures += 1
                    failing_since = failing_since or start
                    self._forget()
                    if isinstance(e, KubeError) and e.status == 401:
                        await self._drop_client()  # maybe a rotated token: reload it
                    self.log.warning("kube_api_error", task=self.name,
                                     error=str(e) if isinstance(e, KubeError)
                                     else f"{type(e).__name__}: {e}",
                                     status=getattr(e, "status", 0), attempt=failures,
                                     retry_in=round(backoff, 3))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max)
                    self._wake.set()
                    continue
                now = time.monotonic()
                self.passes += 1
                if failing_since is not None:
                    self.log.info("kube_api_recovered", task=self.name, attempts=failures,
                                  outage=round(now - failing_since, 3))
                failing_since, failures, backoff = None, 0, self.backoff_start
                self._synced = want
                if verify:
                    self._last_verify = now
                if stats.writes or stats.conflicts:
                    self.log.info("kube_published", task=self.name,
                                  namespace=want.namespace, writes=stats.writes,
                                  conflicts=stats.conflicts, verified=verify,
                                  duration=round(now - start, 4),
                                  lag=round(now - since, 4), **want.row_summary())
        finally:
            self._forget()
            await self._drop_client()

    def _forget(self) -> None:
        """After a failure nothing we believed about the server holds: re-read all."""
        self._seen.clear()
        self._synced = None
        self._verify_due = True

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _ensure_client(self, kube: KubernetesConfig) -> KubeClient:
        if self._client is not None and self._client.source != credentials_source(kube):
            await self._drop_client()
            self._forget()
        if self._client is None:
            self._client = await KubeClient.open(kube, self.request_timeout)
        return self._client

    # ---- one pass ------------------------------------------------------------------
    async def _sync(self, client: KubeClient, want: Objects, verify: bool) -> _Pass:
        stats = _Pass()
        for kind, body in want.items():
            await self._ensure(client, stats, kind, want.namespace, body, verify)
        await self._delete_stale_slices(client, stats, want, verify)
        return stats

    async def _ensure(self, client: KubeClient, stats: _Pass, kind: str, ns: str,
                      want: Obj, fresh: bool) -> None:
        """Make object `want` exist as we want it; returns when it does."""
        name = want["metadata"]["name"]
        key = (kind, ns, name)
        path = resource_path(kind, ns, name)
        have = None if fresh else self._seen.get(key)
        for attempt in range(1, CONFLICT_RETRIES + 1):
            if have is None:
                status, body = await client.request("GET", path)
                if status == 404:
                    have = {}
                elif status == 200:
                    have = body
                else:
                    raise _failure("GET", kind, name, status, body)
            if have and not shape.needs_recreate(kind, want, have):
                if not shape.differs(kind, want, have):
                    self._seen[key] = have
                    return
                action, method, target, payload = ("update", "PUT", path,
                                                   shape.merged(kind, want, have))
            else:
                if have:  # a change an update cannot make: delete, then create
                    await self._delete(client, stats, kind, ns, name, have, "recreate")
                action, method, target, payload = ("create", "POST",
                                                   resource_path(kind, ns), want)
            t0 = time.monotonic()
            status, body = await client.request(method, target, payload)
            if status in (200, 201):
                stats.writes += 1
                self._seen[key] = body
                self.log.info("kube_write", task=self.name, kind=kind, object=f"{ns}/{name}",
                              action=action, outcome="ok",
                              resource_version=body.get("metadata", {}).get("resourceVersion"),
                              duration=round(time.monotonic() - t0, 4))
                return
            if status == 409 or (status == 404 and method == "PUT"):
                # Stale resourceVersion, created meanwhile, or deleted meanwhile: re-read.
                stats.conflicts += 1
                self.log.info("kube_conflict", task=self.name, kind=kind, object=f"{ns}/{name}",
                              action=action, status=status, attempt=attempt,
                              reason=body.get("reason", ""))
                self._seen.pop(key, None)
                have = None
                continue
            raise _failure(method, kind, name, status, body)
        raise KubeError(f"{kind} {ns}/{name}: still conflicting after "
                        f"{CONFLICT_RETRIES} attempts", 409)

    async def _delete(self, client: KubeClient, stats: _Pass, kind: str, ns: str, name: str,
                      have: Obj, action: str) -> None:
        uid = (have.get("metadata") or {}).get("uid")
        options = {"apiVersion": "v1", "kind": "DeleteOptions",
                   **({"preconditions": {"uid": uid}} if uid else {})}
        t0 = time.monotonic()
        status, body = await client.request("DELETE", resource_path(kind, ns, name), options)
        self._seen.pop((kind, ns, name), None)
        if status in (200, 202):
            stats.writes += 1
            self.log.info("kube_write", task=self.name, kind=kind, object=f"{ns}/{name}",
                          action=action if action == "recreate" else "delete", outcome="ok",
                          duration=round(time.monotonic() - t0, 4))
        elif status not in (404, 409):  # gone already, or replaced meanwhile: re-decided next
            raise _failure("DELETE", kind, name, status, body)

    async def _delete_stale_slices(self, client: KubeClient, stats: _Pass, want: Objects,
                                   listed: bool) -> None:
        """Delete our slices for this Service that `want` no longer has."""
        keep = set(want.slice_names())
        stale: dict[str, Obj] = {
            name: obj for (kind, ns, name), obj in list(self._seen.items())
            if kind == SLICE and ns == want.namespace and name not in keep
        }
        if listed and self._kube is not None:
            status, body = await client.request(
                "GET", resource_path(SLICE, want.namespace),
                query={"labelSelector": shape.slice_selector(self._kube)})
            if status != 200:
                raise _failure("LIST", SLICE, want.namespace, status, body)
            for item in body.get("items") or []:
                name = (item.get("metadata") or {}).get("name", "")
                if name and name not in keep:
                    stale[name] = item
        for name, obj in stale.items():
            await self._delete(client, stats, SLICE, want.namespace, name, obj, "delete")

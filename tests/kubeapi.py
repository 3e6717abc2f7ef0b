"""An HTTP-level double of the Kubernetes API: enough of it for ckeetcd and kubectl.

A real HTTPS server (aiohttp, in a thread with its own event loop) on a private
loopback address 127.X.Y.Z (X in 200..250, away from the clusters' 127.1xx
blocks) and a free port, with a certificate from its own CA (ckeetcd.pki),
bearer-token authentication (401 without it), and the semantics clients rely
on:

- discovery: /version, /api, /apis, /api/v1, /apis/discovery.k8s.io[/v1]
  (the legacy, non-aggregated documents; kubectl 1.32 falls back to them);
- namespaces (default, kube-system, kube-public; read-only);
- services, endpoints (core/v1) and endpointslices (discovery.k8s.io/v1) in
  namespaces: GET (object or list, `labelSelector`), POST, PUT, PATCH (merge
  patch; a strategic merge patch is applied as a merge patch), DELETE (with
  preconditions); cluster-wide lists;
- one resourceVersion counter for all objects, bumped by every write that
  changes something (an update that changes nothing is a no-op and keeps the
  version, as in Kubernetes); metadata.uid, creationTimestamp, generation;
- 404 NotFound, 409 AlreadyExists on create, 409 Conflict on an update or
  delete with a stale resourceVersion/uid, 422 Invalid for bad objects and for
  changes of immutable fields (Service clusterIP, EndpointSlice addressType),
  400 for a body whose name does not match the URL;
- server-side defaults (Service type/ipFamilies/sessionAffinity/targetPort,
  port protocols), so a client that compares naively rewrites forever.

Controls for tests (thread-safe, callable from the test thread): `down(mode)`
/ `up()` (refuse connections, answer 503, or hang), `inject_conflict()` (a
concurrent writer touches the object just before the next update), `get()`,
`edit()` and `delete()` "by hand", `history()` (every version of an object
with the time it was written) and `requests` (every request with its status
and user agent). `kubeconfig` is a file pointing at the server with the CA
and the token; `kubectl()` runs the real kubectl through it.

kubectl 1.32 asks for /version, /api, /apis, /api/v1 and
/apis/discovery.k8s.io/v1 (after an aggregated-discovery Accept header, which
the double answers with the legacy documents), then the object, and for a
missing object also its namespace. /openapi/v2 and /v3 are not served, so
`kubectl create`/`apply` need `--validate=false`; get, patch (merge or
strategic, applied as a merge patch) and delete work as they are.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import ipaddress
import itertools
import json
import os
import random
import re
import secrets
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from ckeetcd.support.files import write_atomic, write_private

from ckeetcd.pki import ensure_ca

Obj = dict[str, Any]
KUBECTL = os.environ.get("KUBECTL", "kubectl")
NAMESPACES = ("default", "kube-system", "kube-public")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_addresses = itertools.count()


@dataclass(frozen=True)
class Resource:
    group_version: str  # "v1" or "discovery.k8s.io/v1"
    plural: str
    kind: str
    short: tuple[str, ...] = ()
    create_on_update: bool = False  # PUT of a missing object creates it (Endpoints)

    @property
    def prefix(self) -> str:
        return "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"


SERVICES = Resource("v1", "services", "Service", ("svc",))
ENDPOINTS = Resource("v1", "endpoints", "Endpoints", ("ep",), create_on_update=True)
SLICES = Resource("discovery.k8s.io/v1", "endpointslices", "EndpointSlice")
RESOURCES = {r.plural: r for r in (SERVICES, ENDPOINTS, SLICES)}
KINDS = {r.kind: r for r in RESOURCES.values()}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Request:
    wall: float
    method: str
    path: str
    status: int
    user_agent: str

    @property
    def from_kubectl(self) -> bool:
        return self.user_agent.startswith("kubectl")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        out: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


def free_loopback_address() -> str:
    """A 127.X.Y.Z (X in 200..250) nothing listens on: the double's own address."""
    rng = random.Random(os.getpid() * 7919 + next(_addresses) + time.monotonic_ns())
    while True:
        addr = f"127.{rng.randint(200, 250)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        with socket.socket() as s:
            try:
                s.bind((addr, 0))
            except OSError:
                continue
            return addr


class KubeAPIServer:
    """The double; use as a context manager (or start()/stop())."""

    def __init__(self, root: Path, address: str | None = None) -> None:
        self.root = root
        self.address = address or free_loopback_address()
        self.port = 0
        self.token = secrets.token_hex(16)
        self.kubeconfig = root / "kubeconfig"
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._history: dict[tuple[str, str, str], list[tuple[float, Obj | None]]] = {}
        self._rv = 100
        self._cluster_ips = itertools.count(10)
        self._conflicts: list[str | None] = []  # kinds (None: any) of pending injected conflicts
        self._mode = "up"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._up_event: asyncio.Event | None = None
        self._ssl = self._make_tls()

    # ---- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> KubeAPIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.port}"

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="kubeapi", daemon=True)
        self._thread.start()
        self._call(self._astart())
        self._write_kubeconfig()

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._astop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def _call(self, coro: Any, timeout: float = 30) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _astart(self) -> None:
        self._up_event = asyncio.Event()
        self._up_event.set()
        app = web.Application(client_max_size=4 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.address, self.port,
                                 ssl_context=self._ssl, reuse_address=True)
        await self._site.start()
        if not self.port:
            server = self._site._server
            assert server is not None
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]

    async def _astop(self) -> None:
        assert self._up_event is not None
        self._up_event.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def _make_tls(self) -> ssl.SSLContext:
        pki = self.root / "kubeapi-pki"
        ca = ensure_ca(pki, "kubeapi-double")
        pair = ca.issue("kube-apiserver", dt.timedelta(days=1), server=True, client=False,
                        ips=(self.address,), dns=("localhost", "kubernetes.default.svc"))
        self.ca_file = pki / "ca.crt"
        write_atomic(pki / "server.crt", pair.cert_pem)
        write_private(pki / "server.key", pair.key_pem)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pki / "server.crt", pki / "server.key")
        return ctx

    def _write_kubeconfig(self) -> None:
        text = "\n".join([
            "apiVersion: v1",
            "kind: Config",
            "clusters:",
            "- name: double",
            "  cluster:",
            f"    server: {self.url}",
            f"    certificate-authority: {self.ca_file}",
            "users:",
            "- name: ckeetcd",
            "  user:",
            f"    token: {self.token}",
            "contexts:",
            "- name: double",
            "  context:",
            "    cluster: double",
            "    user: ckeetcd",
            "    namespace: kube-system",
            "current-context: double",
            "",
        ])
        write_private(self.kubeconfig, text.encode())

    # ---- controls ------------------------------------------------------------------
    def down(self, mode: str = "refuse") -> None:
        """Make the API unavailable: "refuse" connections, answer "503", or "hang"."""
        assert mode in ("refuse", "503", "hang")
        self._call(self._adown(mode))

    async def _adown(self, mode: str) -> None:
        assert self._up_event is not None
        self._mode = mode
        if mode == "hang":
            self._up_event.clear()
        if mode == "refuse" and self._site is not None:
            await self._site.stop()
            self._site = None
            self._drop_connections()

    def _drop_connections(self) -> None:
        server = self._runner.server if self._runner else None
        for conn in list(getattr(server, "connections", [])):
            conn.force_close()
            if conn.transport is not None:
                conn.transport.close()

    def up(self) -> None:
        self._call(self._aup())

    async def _aup(self) -> None:
        assert self._up_event is not None
        if self._site is None:
            await self._listen()
        self._mode = "up"
        self._up_event.set()

    def inject_conflict(self, kind: str | None = None, count: int = 1) -> None:
        """Before each of the next `count` updates (PUT) of `kind` (None: any),
        a concurrent writer touches the object, so the update's resourceVersion
        is stale and it gets 409 Conflict."""
        with self._lock:
            self._conflicts += [kind] * count

    def pending_conflicts(self) -> int:
        with self._lock:
            return len(self._conflicts)

    def get(self, kind: str, name: str, namespace: str = "kube-system") -> Obj | None:
        with self._lock:
            obj = self._objects.get((KINDS[kind].plural, namespace, name))
            return copy.deepcopy(obj) if obj else None

    def edit(self, kind: str, name: str, fn: Callable[[Obj], None],
             namespace: str = "kube-system") -> Obj:
        """Change an object "by hand" (no validation), as another client would."""
        with self._lock:
            key = (KINDS[kind].plural, namespace, name)
            obj = copy.deepcopy(self._objects[key])
            fn(obj)
            return self._store(key, obj)

    def create(self, kind: str, obj: Obj, namespace: str = "kube-system") -> Obj:
        """Create an object "by hand" (validated, as a POST would be)."""
        with self._lock:
            return self._create(KINDS[kind], namespace, obj)

    def delete(self, kind: str, name: str, namespace: str = "kube-system") -> None:
        with self._lock:
            key = (KINDS[kind].plural, namespace, name)
            del self._objects[key]
            self._history.setdefault(key, []).append((time.time(), None))

    def history(self, kind: str, name: str,
                namespace: str = "kube-system") -> list[tuple[float, Obj | None]]:
        """Every version of the object, (wall time written, object or None if deleted)."""
        with self._lock:
            return copy.deepcopy(self._history.get((KINDS[kind].plural, namespace, name), []))

    def names(self, kind: str, namespace: str = "kube-system") -> list[str]:
        with self._lock:
            plural = KINDS[kind].plural
            return sorted(n for (p, ns, n) in self._objects if p == plural and ns == namespace)

    def writes(self, since: float = 0.0, kubectl: bool = False) -> list[Request]:
        """Mutating requests after wall time `since` (by default: not kubectl's)."""
        return [r for r in list(self.requests)
                if r.wall >= since and r.method in ("POST", "PUT", "PATCH", "DELETE")
                and r.from_kubectl == kubectl]

    def kubectl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl through the kubeconfig (its own discovery cache)."""
        cmd = [KUBECTL, f"--kubeconfig={self.kubeconfig}",
               f"--cache-dir={self.root / 'kubectl-cache'}", *args]
        env = {**os.environ, "HOME": str(self.root)}
        env.pop("KUBECONFIG", None)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)

    # ---- storage -----------------------------------------------------------------------
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _store(self, key: tuple[str, str, str], obj: Obj) -> Obj:
        obj.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
        self._objects[key] = obj
        self._history.setdefault(key, []).append((time.time(), copy.deepcopy(obj)))
        return copy.deepcopy(obj)

    # ---- HTTP ----------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._up_event is not None
        if self._mode == "refuse":  # a connection opened before the API went down
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503)  # never sent: the connection is gone
        if self._mode == "hang":
            await self._up_event.wait()
        status, body = 500, {}
        try:
            if self._mode == "503":
                raise ApiError(503, "ServiceUnavailable", "the server is currently unable "
                                                          "to handle the request")
            if request.path not in ("/healthz", "/livez", "/readyz"):
                self._authenticate(request)
            status, body = await self._route(request)
        except ApiError as e:
            status, body = e.code, e.status()
        self.requests.append(Request(time.time(), request.method, request.path_qs, status,
                                     request.headers.get("User-Agent", "")))
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.Response(status=status, text=json.dumps(body),
                            content_type="application/json")

    def _authenticate(self, request: web.Request) -> None:
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized", "Unauthorized")

    async def _route(self, request: web.Request) -> tuple[int, Any]:
        path = request.path.rstrip("/") or "/"
        method = request.method
        if path in ("/healthz", "/livez", "/readyz"):
            return 200, "ok"
        discovery = self._discovery(path)
        if discovery is not None:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"{method} not allowed on {path}")
            return 200, discovery
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            rest, gv = parts[2:], "v1"
        elif parts[:3] == ["apis", "discovery.k8s.io", "v1"]:
            rest, gv = parts[3:], "discovery.k8s.io/v1"
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if gv == "v1" and rest and rest[0] == "namespaces" and len(rest) <= 2:
            return self._namespaces(method, rest[1] if len(rest) == 2 else None)
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or rest[0] not in RESOURCES or RESOURCES[rest[0]].group_version != gv \
                or len(rest) > 2:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        res = RESOURCES[rest[0]]
        name = rest[1] if len(rest) == 2 else None
        if namespace is not None and namespace not in NAMESPACES:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                           name=namespace, kind="namespaces")
        if request.query.get("watch") in ("1", "true"):
            raise ApiError(405, "MethodNotAllowed", "watch is not implemented by the double")
        raw = await request.read()
        ctype = request.headers.get("Content-Type", "")
        with self._lock:
            if name is None:
                if method == "GET":
                    return 200, self._list(res, namespace, request.query.get("labelSelector"))
                if method == "POST" and namespace is not None:
                    return 201, self._create(res, namespace, _json(raw))
                raise ApiError(405, "MethodNotAllowed", f"{method} not allowed on a list")
            if namespace is None:
                raise ApiError(404, "NotFound", "the server could not find the requested "
                                                "resource")
            if method == "GET":
                return 200, self._read(res, namespace, name)
            if method == "PUT":
                return self._update(res, namespace, name, _json(raw))
            if method == "PATCH":
                return 200, self._patch(res, namespace, name, ctype, _json(raw))
            if method == "DELETE":
                return 200, self._delete(res, namespace, name, _json(raw) if raw else {})
        raise ApiError(405, "MethodNotAllowed", f"{method} not allowed")

    # ---- discovery -------------------------------------------------------------------
    def _discovery(self, path: str) -> Obj | None:
        if path == "/version":
            return {"major": "1", "minor": "32", "gitVersion": "v1.32.0-ckeetcd-double",
                    "gitCommit": "0" * 40, "gitTreeState": "clean",
                    "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23.4",
                    "compiler": "gc", "platform": "linux/amd64"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.address}:{self.port}"}
                    ]}
        group = {"name": "discovery.k8s.io",
                 "versions": [{"groupVersion": "discovery.k8s.io/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": "discovery.k8s.io/v1", "version": "v1"}}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}
        if path == "/apis/discovery.k8s.io":
            return {"kind": "APIGroup", "apiVersion": "v1", **group}
        if path == "/api/v1":
            resources = [{"name": "namespaces", "singularName": "namespace", "namespaced": False,
                          "kind": "Namespace", "verbs": ["get", "list"], "shortNames": ["ns"]}]
            resources += [self._api_resource(r) for r in (SERVICES, ENDPOINTS)]
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}
        if path == "/apis/discovery.k8s.io/v1":
            return {"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": "discovery.k8s.io/v1",
                    "resources": [self._api_resource(SLICES)]}
        return None

    @staticmethod
    def _api_resource(r: Resource) -> Obj:
        out: Obj = {"name": r.plural, "singularName": r.kind.lower(), "namespaced": True,
                    "kind": r.kind, "verbs": VERBS}
        if r.short:
            out["shortNames"] = list(r.short)
        return out

    def _namespaces(self, method: str, name: str | None) -> tuple[int, Obj]:
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", "namespaces are read-only in the double")

        def ns(n: str) -> Obj:
            return {"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": n, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, n)),
                                 "resourceVersion": "1",
                                 "creationTimestamp": "2024-01-01T00:00:00Z"},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}

        if name is None:
            return 200, {"kind": "NamespaceList", "apiVersion": "v1",
                         "metadata": {"resourceVersion": str(self._rv)},
                         "items": [ns(n) for n in NAMESPACES]}
        if name not in NAMESPACES:
            raise ApiError(404, "NotFound", f'namespaces "{name}" not found',
                           name=name, kind="namespaces")
        return 200, ns(name)

    # ---- verbs -------------------------------------------------------------------------
    def _key(self, res: Resource, namespace: str, name: str) -> tuple[str, str, str]:
        return (res.plural, namespace, name)

    def _not_found(self, res: Resource, name: str) -> ApiError:
        group = res.group_version.split("/")[0] if "/" in res.group_version else ""
        what = f"{res.plural}.{group}" if group else res.plural
        return ApiError(404, "NotFound", f'{what} "{name}" not found', name=name,
                        group=group, kind=res.plural)

    def _read(self, res: Resource, namespace: str, name: str) -> Obj:
        obj = self._objects.get(self._key(res, namespace, name))
        if obj is None:
            raise self._not_found(res, name)
        return copy.deepcopy(obj)

    def _list(self, res: Resource, namespace: str | None, selector: str | None) -> Obj:
        match = _selector(selector or "")
        items = []
        for (plural, ns, _), obj in sorted(self._objects.items()):
            if plural == res.plural and namespace in (None, ns) and \
                    match((obj.get("metadata") or {}).get("labels") or {}):
                item = copy.deepcopy(obj)
                item.pop("kind", None)
                item.pop("apiVersion", None)
                items.append(item)
        return {"kind": f"{res.kind}List", "apiVersion": res.group_version,
                "metadata": {"resourceVersion": str(self._rv)}, "items": items}

    def _create(self, res: Resource, namespace: str, body: Obj) -> Obj:
        obj = self._admit(res, namespace, body, None)
        key = self._key(res, namespace, obj["metadata"]["name"])
        if key in self._objects:
            name = obj["metadata"]["name"]
            raise ApiError(409, "AlreadyExists", f'{res.plural} "{name}" already exists',
                           name=name, kind=res.plural)
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if res is SLICES:  # of these three kinds only EndpointSlices carry a generation
            meta["generation"] = 1
        for k in ("deletionTimestamp", "selfLink"):
            meta.pop(k, None)
        return self._store(key, obj)

    def _update(self, res: Resource, namespace: str, name: str, body: Obj) -> tuple[int, Obj]:
        key = self._key(res, namespace, name)
        pending = next((i for i, k in enumerate(self._conflicts) if k in (None, res.kind)), None)
        if pending is not None and key in self._objects:
            self._conflicts.pop(pending)
            touched = copy.deepcopy(self._objects[key])
            notes = touched["metadata"].setdefault("annotations", {})
            notes["test.ckeetcd/concurrent-writer"] = str(int(notes.get(
                "test.ckeetcd/concurrent-writer", "0")) + 1)
            self._store(key, touched)
        current = self._objects.get(key)
        meta = body.get("metadata") if isinstance(body, dict) else None
        if isinstance(meta, dict) and meta.get("name") not in (None, name):
            raise ApiError(400, "BadRequest", "the name of the object "
                           f"({meta.get('name')}) does not match the name on the URL ({name})")
        if current is None:
            if not res.create_on_update:
                raise self._not_found(res, name)
            body = copy.deepcopy(body)
            body.setdefault("metadata", {})["name"] = name
            body["metadata"].pop("resourceVersion", None)
            return 201, self._create(res, namespace, body)
        return 200, self._replace(res, key, current, body)

    def _replace(self, res: Resource, key: tuple[str, str, str], current: Obj,
                 body: Obj) -> Obj:
        name = key[2]
        obj = self._admit(res, key[1], body, current)
        meta, cur = obj["metadata"], current["metadata"]
        rv = meta.get("resourceVersion")
        if rv not in (None, "") and rv != cur["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.plural} '
                           f'"{name}": the object has been modified; please apply your changes '
                           "to the latest version and try again", name=name, kind=res.plural)
        if meta.get("uid") not in (None, "", cur["uid"]):
            raise ApiError(409, "Conflict", f'Precondition failed: UID in precondition: '
                           f'{meta.get("uid")}, UID in object meta: {cur["uid"]}',
                           name=name, kind=res.plural)
        if res is SERVICES and obj["spec"].get("clusterIP") != current["spec"].get("clusterIP"):
            raise ApiError(422, "Invalid", f'Service "{name}" is invalid: spec.clusterIP: '
                           "Invalid value: field is immutable", name=name, kind="Service")
        if res is SLICES and obj.get("addressType") != current.get("addressType"):
            raise ApiError(422, "Invalid", f'EndpointSlice.discovery.k8s.io "{name}" is '
                           "invalid: addressType: Invalid value: field is immutable",
                           name=name, kind="EndpointSlice")
        for k in ("uid", "creationTimestamp", "generation"):
            meta.pop(k, None)
            if k in cur:
                meta[k] = cur[k]
        meta["resourceVersion"] = cur["resourceVersion"]
        if _content(obj) == _content(current):
            return copy.deepcopy(current)  # a no-op update: nothing written
        if "generation" in cur and _payload(obj) != _payload(current):
            meta["generation"] = int(cur["generation"]) + 1
        return self._store(key, obj)

    def _patch(self, res: Resource, namespace: str, name: str, ctype: str, patch: Obj) -> Obj:
        if "json-patch" in ctype:
            raise ApiError(415, "UnsupportedMediaType", "the double supports merge patches only")
        key = self._key(res, namespace, name)
        current = self._objects.get(key)
        if current is None:
            raise self._not_found(res, name)
        body = _merge_patch(copy.deepcopy(current), patch)
        if not isinstance(patch.get("metadata"), dict) or \
                "resourceVersion" not in patch["metadata"]:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self._replace(res, key, current, body)

    def _delete(self, res: Resource, namespace: str, name: str, options: Obj) -> Obj:
        key = self._key(res, namespace, name)
        current = self._objects.get(key)
        if current is None:
            raise self._not_found(res, name)
        pre = options.get("preconditions") or {}
        meta = current["metadata"]
        if pre.get("uid") not in (None, meta["uid"]) or \
                pre.get("resourceVersion") not in (None, meta["resourceVersion"]):
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.plural} '
                           f'"{name}": Precondition failed: {pre}', name=name, kind=res.plural)
        del self._objects[key]
        self._rv += 1
        self._history.setdefault(key, []).append((time.time(), None))
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": res.group_version.rpartition("/")[0],
                            "kind": res.plural, "uid": meta["uid"]}}

    # ---- admission: validation and defaults ------------------------------------------
    def _admit(self, res: Resource, namespace: str, body: Any, current: Obj | None) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        obj = copy.deepcopy(body)
        want_api = res.group_version
        if obj.get("kind") not in (None, res.kind) or \
                obj.get("apiVersion") not in (None, want_api):
            raise ApiError(400, "BadRequest", f"the body is a {obj.get('apiVersion')}/"
                           f"{obj.get('kind')}, not a {want_api}/{res.kind}")
        obj["kind"], obj["apiVersion"] = res.kind, want_api
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if meta.get("namespace") not in (None, "", namespace):
            raise ApiError(400, "BadRequest", "the namespace of the object does not match "
                                              "the namespace on the URL")
        meta["namespace"] = namespace
        name = meta.get("name")
        problems: list[str] = []
        if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name):
            problems.append(f"metadata.name: Invalid value: {name!r}")
        for field in ("labels", "annotations"):
            values = meta.get(field)
            if values is None:
                continue
            if not isinstance(values, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
                raise ApiError(400, "BadRequest", f"metadata.{field}: must map strings to "
                                                  "strings")
            if field == "labels" and any(len(v) > 63 for v in values.values()):
                problems.append("metadata.labels: Invalid value: must be no more than 63 "
                                "characters")
        problems += {SERVICES: _admit_service, ENDPOINTS: _admit_endpoints,
                     SLICES: _admit_slice}[res](obj, self)
        if problems:
            raise ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: '
                           + "; ".join(problems), name=name, kind=res.kind,
                           causes=[{"message": p} for p in problems])
        return obj

    def allocate_cluster_ip(self) -> str:
        return f"10.96.0.{next(self._cluster_ips)}"


def _admit_ports(ports: Any, where: str, service: bool = False) -> list[str]:
    problems: list[str] = []
    if not isinstance(ports, list):
        return [f"{where}: must be a list"]
    names = set()
    for i, p in enumerate(ports):
        if not isinstance(p, dict):
            problems.append(f"{where}[{i}]: must be an object")
            continue
        p.setdefault("protocol", "TCP")
        if p["protocol"] not in ("TCP", "UDP", "SCTP"):
            problems.append(f"{where}[{i}].protocol: Unsupported value")
        port = p.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            problems.append(f"{where}[{i}].port: Invalid value: {port!r}")
        name = p.get("name", "")
        if name and not _DNS_LABEL.match(name):
            problems.append(f"{where}[{i}].name: Invalid value: {name!r}")
        if name in names:
            problems.append(f"{where}[{i}].name: Duplicate value: {name!r}")
        names.add(name)
        if service:
            p.setdefault("targetPort", port)
    if len(ports) > 1 and "" in names:
        problems.append(f"{where}: names are required when there is more than one port")
    return problems


def _admit_service(obj: Obj, server: KubeAPIServer) -> list[str]:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return ["spec: must be an object"]
    spec.setdefault("type", "ClusterIP")
    if spec["type"] not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        return [f"spec.type: Unsupported value: {spec['type']!r}"]
    problems = _admit_ports(spec.get("ports") or [], "spec.ports", service=True)
    if spec["type"] != "ExternalName":
        if not spec.get("ports"):
            problems.append("spec.ports: Required value")
        if not spec.get("clusterIP"):
            spec["clusterIP"] = server.allocate_cluster_ip()
        ip = spec["clusterIP"]
        if ip != "None":
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                problems.append(f"spec.clusterIP: Invalid value: {ip!r}")
        spec.setdefault("clusterIPs", [ip])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    spec.setdefault("sessionAffinity", "None")
    obj.setdefault("status", {"loadBalancer": {}})
    return problems


def _admit_addresses(addrs: Any, where: str) -> list[str]:
    if not isinstance(addrs, list):
        return [f"{where}: must be a list"]
    problems = []
    for i, a in enumerate(addrs):
        ip = a.get("ip") if isinstance(a, dict) else None
        try:
            ipaddress.ip_address(ip or "")
        except ValueError:
            problems.append(f"{where}[{i}].ip: Invalid value: {ip!r}")
        host = a.get("hostname") if isinstance(a, dict) else None
        if host is not None and not _DNS_LABEL.match(str(host)):
            problems.append(f"{where}[{i}].hostname: Invalid value: {host!r}")
    return problems


def _admit_endpoints(obj: Obj, server: KubeAPIServer) -> list[str]:
    subsets = obj.setdefault("subsets", [])
    if subsets is None:
        obj["subsets"] = subsets = []
    if not isinstance(subsets, list):
        return ["subsets: must be a list"]
    problems = []
    for i, s in enumerate(subsets):
        if not isinstance(s, dict):
            problems.append(f"subsets[{i}]: must be an object")
            continue
        problems += _admit_addresses(s.get("addresses") or [], f"subsets[{i}].addresses")
        problems += _admit_addresses(s.get("notReadyAddresses") or [],
                                     f"subsets[{i}].notReadyAddresses")
        if not s.get("addresses") and not s.get("notReadyAddresses"):
            problems.append(f"subsets[{i}]: must have at least one address")
        problems += _admit_ports(s.get("ports") or [], f"subsets[{i}].ports")
    return problems


def _admit_slice(obj: Obj, server: KubeAPIServer) -> list[str]:
    family = obj.get("addressType")
    if family not in ("IPv4", "IPv6", "FQDN"):
        return [f"addressType: Unsupported value: {family!r}"]
    eps = obj.setdefault("endpoints", [])
    if eps is None:
        obj["endpoints"] = eps = []
    if not isinstance(eps, list) or len(eps) > 1000:
        return ["endpoints: must be a list of at most 1000"]
    problems = []
    for i, e in enumerate(eps):
        addrs = e.get("addresses") if isinstance(e, dict) else None
        if not isinstance(addrs, list) or not 1 <= len(addrs) <= 100:
            problems.append(f"endpoints[{i}].addresses: must have 1 to 100 addresses")
            continue
        for j, a in enumerate(addrs):
            try:
                version = ipaddress.ip_address(a).version
            except ValueError:
                version = 0
            if family != "FQDN" and f"IPv{version}" != family:
                problems.append(f"endpoints[{i}].addresses[{j}]: Invalid value: {a!r}: "
                                f"must be a valid {family} address")
        cond = e.get("conditions") or {}
        if not isinstance(cond, dict) or not all(
                isinstance(v, bool) for v in cond.values()):
            problems.append(f"endpoints[{i}].conditions: must map to booleans")
        host = e.get("hostname")
        if host is not None and not _DNS_LABEL.match(str(host)):
            problems.append(f"endpoints[{i}].hostname: Invalid value: {host!r}")
    problems += _admit_ports(obj.get("ports") or [], "ports")
    return problems


# ---- helpers -------------------------------------------------------------------------
def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError as e:
        raise ApiError(400, "BadRequest", f"the body is not JSON: {e}") from e


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _content(obj: Obj) -> Obj:
    """The object without the fields a write sets (to spot no-op updates)."""
    out = copy.deepcopy(obj)
    meta = out.get("metadata", {})
    for k in ("resourceVersion", "generation", "managedFields"):
        meta.pop(k, None)
    return out


def _payload(obj: Obj) -> Obj:
    out = _content(obj)
    out.pop("metadata", None)
    out.pop("status", None)
    return out


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = _merge_patch(target.get(k), v)
    return target


def _selector(text: str) -> Callable[[dict[str, str]], bool]:
    """Equality-based label selectors: k=v, k==v, k!=v, k, !k (comma = AND)."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            tests.append(lambda labels, k=k, v=v: labels.get(k) != v)
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            tests.append(lambda labels, k=k, v=v: labels.get(k) == v)
        elif term.startswith("!"):
            tests.append(lambda labels, k=term[1:]: k not in labels)
        else:
            tests.append(lambda labels, k=term: k in labels)
    return lambda labels: all(t(labels) for t in tests)


def slice_endpoints(obj: Obj | None) -> dict[str, bool]:
    """address -> conditions.ready of an EndpointSlice (empty when None)."""
    return {e["addresses"][0]: bool((e.get("conditions") or {}).get("ready"))
            for e in (obj or {}).get("endpoints") or []}


def endpoints_addresses(obj: Obj | None) -> tuple[set[str], set[str]]:
    """(ready, not ready) IPs of an Endpoints object."""
    ready: set[str] = set()
    not_ready: set[str] = set()
    for s in (obj or {}).get("subsets") or []:
        ready |= {a["ip"] for a in s.get("addresses") or []}
        not_ready |= {a["ip"] for a in s.get("notReadyAddresses") or []}
    return ready, not_ready

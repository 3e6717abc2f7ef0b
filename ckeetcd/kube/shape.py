"""What the endpoints task publishes: pure functions, no I/O.

From one `Desired` and one `Observed` snapshot, `build()` computes the three
kinds of object that make the etcd members discoverable in Kubernetes:

- Service `<name>`: headless (`clusterIP: None`), no selector, one TCP port
  named `etcd` (the client port). CoreDNS answers `<name>.<ns>.svc.<domain>`
  with the ready addresses; without a selector no controller touches its
  Endpoints.
- Endpoints `<name>`: label `endpointslice.kubernetes.io/skip-mirror: "true"`
  (we publish the slices ourselves); one subset, `addresses` = the ready
  members, `notReadyAddresses` = all other members.
- EndpointSlice(s): labels `kubernetes.io/service-name: <name>` and
  `endpointslice.kubernetes.io/managed-by: ckeetcd`; one endpoint per member
  with `conditions` {ready, serving, terminating}.

Which members are listed (the "rows"):

- Every member in etcd's member list, matched to the desired config by peer
  URL. A desired member uses its configured name and address; a live member
  that is no longer desired (it is being removed) keeps its etcd name and the
  host of its peer URL, and is marked `terminating`.
- A desired member not yet in the member list is not listed: it serves no one.
- When no member answered MemberList (`observed.members is None`: the whole
  cluster is unreachable) every desired member is listed, none ready.

Readiness: `ready` = healthy (its own Status RPC answered) AND a voter (not a
learner) AND desired. `serving` = healthy AND voter (the EndpointSlice meaning:
ready but for terminating). `terminating` = live but no longer desired. So
Endpoints `addresses` carry exactly the members kube-apiservers may use.

Address families: an EndpointSlice holds one family. The slice named `<name>`
(the one `kubectl get endpointslices/<name>` shows) holds IPv4 members when
there is at least one, else IPv6 members; a cluster that mixes families gets a
second slice `<name>-ipv6` for its IPv6 members. Endpoints objects may mix
families, so Endpoints `<name>` lists all members. Addresses are sorted
(IPv4 before IPv6, numerically), so the objects do not depend on config order.

Hostnames: an endpoint carries `hostname: <member name>` when the name is a
DNS-1123 label (member names may contain `.`, `_` or capitals, which
Kubernetes rejects there); it names the member in `kubectl -o yaml` output.

The rest of the module compares what we want with what the API server holds:
`differs()` looks only at the fields we own (our labels, the Service ports and
headless-ness, the subsets, the slice's endpoints/ports/addressType), so
defaults the API server adds (ipFamilies, sessionAffinity, ...) and labels or
annotations added by others never cause a write. `merged()` builds the
replacement body from the live object (keeping its resourceVersion, uid and
server-set fields). `needs_recreate()` names the changes the API server
refuses on update (a Service that is not headless, a slice's addressType).
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ckeetcd.core.config import KubernetesConfig
from ckeetcd.core.model import Desired, Observed

MANAGED_BY = "ckeetcd"
PORT_NAME = "etcd"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_SLICE_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
LABEL_SKIP_MIRROR = "endpointslice.kubernetes.io/skip-mirror"

SERVICE = "Service"
ENDPOINTS = "Endpoints"
SLICE = "EndpointSlice"

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # fullmatch

Obj = dict[str, Any]


@dataclass(frozen=True)
class Row:
    """One member as published."""

    name: str
    address: str
    ready: bool
    serving: bool
    terminating: bool

    @property
    def family(self) -> str:
        return "IPv6" if ":" in self.address else "IPv4"

    @property
    def hostname(self) -> str | None:
        return self.name if _DNS_LABEL.fullmatch(self.name) else None

    def sort_key(self) -> tuple[int, int]:
        ip = ipaddress.ip_address(self.address)
        return (ip.version, int(ip))


@dataclass(frozen=True)
class Objects:
    """Everything the task keeps in one namespace, in write order."""

    namespace: str
    service: Obj
    endpoints: Obj
    slices: tuple[Obj, ...]

    def items(self) -> Iterator[tuple[str, Obj]]:
        """(kind, body): the Service first (CoreDNS needs it), slices before Endpoints."""
        yield SERVICE, self.service
        for s in self.slices:
            yield SLICE, s
        yield ENDPOINTS, self.endpoints

    def slice_names(self) -> tuple[str, ...]:
        return tuple(s["metadata"]["name"] for s in self.slices)

    def row_summary(self) -> dict[str, list[str]]:
        """Ready / not ready addresses as published in Endpoints (for logs)."""
        subsets = self.endpoints.get("subsets") or [{}]
        return {
            "ready": [a["ip"] for a in subsets[0].get("addresses", [])],
            "not_ready": [a["ip"] for a in subsets[0].get("notReadyAddresses", [])],
        }


# ---- which members, and how ready ------------------------------------------------
def rows(desired: Desired, observed: Observed) -> tuple[Row, ...]:
    """The members to publish, sorted by address (see the module docstring)."""
    out: list[Row] = []
    if observed.members is None:
        out = [Row(m.name, m.address, False, False, False) for m in desired.members]
    else:
        for live in observed.members:
            want = desired.by_peer_url(live.peer_url)
            if want is not None:
                name, address = want.name, want.address
            else:
                address = _url_ip(live.peer_url) or next(
                    (ip for ip in map(_url_ip, live.client_urls) if ip), "")
                if not address:
                    continue  # a peer URL by DNS name: nothing to put in an Endpoints
                name = live.name or f"{live.id:x}"
            serving = observed.is_healthy(live) and not live.learner
            out.append(Row(name, address, serving and want is not None, serving,
                           want is None))
    return tuple(sorted(out, key=Row.sort_key))


def _url_ip(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
        return str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        return None


# ---- the objects -----------------------------------------------------------------
def build(kube: KubernetesConfig, client_port: int, desired: Desired,
          observed: Observed) -> Objects:
    """The Service, Endpoints and EndpointSlice(s) for this snapshot."""
    return objects(kube, client_port, rows(desired, observed))


def objects(kube: KubernetesConfig, port: int, members: tuple[Row, ...]) -> Objects:
    return Objects(
        namespace=kube.namespace,
        service=service(kube, port),
        endpoints=endpoints(kube, port, members),
        slices=endpoint_slices(kube, port, members),
    )


def _meta(kube: KubernetesConfig, name: str, labels: Mapping[str, str]) -> Obj:
    return {"name": name, "namespace": kube.namespace,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY, **labels}}


def _port(port: int) -> Obj:
    return {"name": PORT_NAME, "port": port, "protocol": "TCP"}


def service(kube: KubernetesConfig, port: int) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": SERVICE,
        "metadata": _meta(kube, kube.name, {}),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "ports": [{**_port(port), "targetPort": port}],
        },
    }


def _address(row: Row) -> Obj:
    out: Obj = {"ip": row.address}
    if row.hostname:
        out["hostname"] = row.hostname
    return out


def endpoints(kube: KubernetesConfig, port: int, members: tuple[Row, ...]) -> Obj:
    ready = [_address(r) for r in members if r.ready]
    not_ready = [_address(r) for r in members if not r.ready]
    subset: Obj = {}
    if ready:
        subset["addresses"] = ready
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    subset["ports"] = [_port(port)]
    return {
        "apiVersion": "v1",
        "kind": ENDPOINTS,
        "metadata": _meta(kube, kube.name, {LABEL_SKIP_MIRROR: "true"}),
        "subsets": [subset] if members else [],
    }


def slice_name(kube: KubernetesConfig, family: str, families: set[str]) -> str:
    """`<name>` for the first family present (IPv4, else IPv6); `<name>-ipv6` beside IPv4."""
    if family == "IPv6" and "IPv4" in families:
        return f"{kube.name}-ipv6"
    return kube.name


def endpoint_slices(kube: KubernetesConfig, port: int,
                    members: tuple[Row, ...]) -> tuple[Obj, ...]:
    families = {r.family for r in members} or {"IPv4"}
    out = []
    for family in ("IPv4", "IPv6"):
        if family not in families:
            continue
        eps: list[Obj] = []
        for r in members:
            if r.family != family:
                continue
            ep: Obj = {
                "addresses": [r.address],
                "conditions": {"ready": r.ready, "serving": r.serving,
                               "terminating": r.terminating},
            }
            if r.hostname:
                ep["hostname"] = r.hostname
            eps.append(ep)
        out.append({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": SLICE,
            "metadata": _meta(kube, slice_name(kube, family, families), {
                LABEL_SERVICE_NAME: kube.name,
                LABEL_SLICE_MANAGED_BY: MANAGED_BY,
            }),
            "addressType": family,
            "endpoints": eps,
            "ports": [_port(port)],
        })
    return tuple(out)


def slice_selector(kube: KubernetesConfig) -> str:
    """The label selector that finds every slice this task owns for `kube.name`."""
    return f"{LABEL_SERVICE_NAME}={kube.name},{LABEL_SLICE_MANAGED_BY}={MANAGED_BY}"


# ---- comparing with the live object ------------------------------------------------
def _norm_port(p: Mapping[str, Any], service: bool = False) -> Obj:
    out: Obj = {"name": p.get("name", ""), "port": p.get("port"),
                "protocol": p.get("protocol") or "TCP"}
    if service:
        out["targetPort"] = p.get("targetPort", p.get("port"))
        out["nodePort"] = p.get("nodePort")
        out["appProtocol"] = p.get("appProtocol")
    return out


def _ports(obj: Mapping[str, Any] | None, service: bool = False) -> list[Obj]:
    return [_norm_port(p, service) for p in (obj or {}).get("ports") or []]


def _norm_address(a: Mapping[str, Any]) -> Obj:
    return {k: v for k, v in a.items() if v not in (None, "", {}, [])}


def _norm_subset(s: Mapping[str, Any]) -> Obj:
    return {
        "addresses": [_norm_address(a) for a in s.get("addresses") or []],
        "notReadyAddresses": [_norm_address(a) for a in s.get("notReadyAddresses") or []],
        "ports": _ports(s),
    }


def _norm_endpoint(e: Mapping[str, Any]) -> Obj:
    out = _norm_address(e)
    cond = e.get("conditions") or {}
    out["conditions"] = {k: cond.get(k) for k in ("ready", "serving", "terminating")}
    return out


def view(kind: str, obj: Mapping[str, Any], labels: Mapping[str, str]) -> Obj:
    """The part of `obj` this task owns: our label keys (from `labels`) and the payload."""
    meta = obj.get("metadata") or {}
    have = meta.get("labels") or {}
    out: Obj = {"labels": {k: have.get(k) for k in labels}}
    if kind == SERVICE:
        spec = obj.get("spec") or {}
        out["spec"] = {
            "type": spec.get("type") or "ClusterIP",
            "clusterIP": spec.get("clusterIP"),
            "selector": spec.get("selector") or None,
            "ports": _ports(spec, service=True),
        }
    elif kind == ENDPOINTS:
        out["subsets"] = [_norm_subset(s) for s in obj.get("subsets") or []]
    elif kind == SLICE:
        out["addressType"] = obj.get("addressType")
        out["endpoints"] = [_norm_endpoint(e) for e in obj.get("endpoints") or []]
        out["ports"] = _ports(obj)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return out


def differs(kind: str, want: Mapping[str, Any], have: Mapping[str, Any]) -> bool:
    """True when `have` (the live object) is not what we publish."""
    labels = want["metadata"].get("labels") or {}
    return view(kind, want, labels) != view(kind, have, labels)


def needs_recreate(kind: str, want: Mapping[str, Any], have: Mapping[str, Any]) -> bool:
    """Changes an update cannot make: they need delete + create."""
    if kind == SERVICE:
        return bool((have.get("spec") or {}).get("clusterIP") != want["spec"]["clusterIP"])
    if kind == SLICE:
        return bool(have.get("addressType") != want["addressType"])
    return False


def merged(kind: str, want: Mapping[str, Any], have: Mapping[str, Any]) -> Obj:
    """The body of the update: the live object with our fields put back.

    Keeps the live metadata (resourceVersion for optimistic concurrency, uid,
    labels and annotations of others) and any server-set spec fields.
    """
    out = copy.deepcopy(dict(have))
    out["apiVersion"], out["kind"] = want["apiVersion"], want["kind"]
    meta = out.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **want["metadata"]["labels"]}
    if kind == SERVICE:
        spec = out.setdefault("spec", {})
        spec.pop("selector", None)
        spec.update(copy.deepcopy(want["spec"]))
    elif kind == ENDPOINTS:
        out["subsets"] = copy.deepcopy(want["subsets"])
    elif kind == SLICE:
        for key in ("addressType", "endpoints", "ports"):
            out[key] = copy.deepcopy(want[key])
    return out

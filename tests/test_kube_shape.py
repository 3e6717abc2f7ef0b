"""ckeetcd.kube.shape: which members are published, how, and when a write is needed.

Pure table tests over the state builders of tests/builders.py
(m<N> -> 10.0.0.N; x9 -> 10.0.24.9).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

from ckeetcd.core.config import KubernetesConfig
from ckeetcd.core.model import Desired, DesiredMember, Health, LiveMember, Observed
from ckeetcd.kube import shape
from ckeetcd.kube.shape import ENDPOINTS, SERVICE, SLICE, Row
from tests.builders import cluster, desired, live

KUBE = KubernetesConfig()


def R(name: str, address: str, ready: bool = True, serving: bool | None = None,
      terminating: bool = False) -> Row:
    return Row(name, address, ready, ready if serving is None else serving, terminating)


# ---- rows: which members, how ready ------------------------------------------------
ROW_CASES: list[tuple[str, Desired, Observed, tuple[Row, ...]]] = [
    ("all healthy voters are ready",
     desired(["m1", "m2", "m3"]), cluster(["m1", "m2", "m3"]),
     (R("m1", "10.0.0.1"), R("m2", "10.0.0.2"), R("m3", "10.0.0.3"))),
    ("a dead member is listed, not ready, not serving",
     desired(["m1", "m2", "m3"]), cluster(["m1", "m2", "m3"], dead=["m2"]),
     (R("m1", "10.0.0.1"), R("m2", "10.0.0.2", False), R("m3", "10.0.0.3"))),
    ("a hung member (process runs, Status fails) is not ready",
     desired(["m1", "m2", "m3"]), cluster(["m1", "m2", "m3"], hung=["m3"]),
     (R("m1", "10.0.0.1"), R("m2", "10.0.0.2"), R("m3", "10.0.0.3", False))),
    ("a healthy learner is listed but not ready",
     desired(["m1", "m2", "m3", "m4"]),
     cluster(["m1", "m2", "m3"], learner="m4", learner_started=True),
     (R("m1", "10.0.0.1"), R("m2", "10.0.0.2"), R("m3", "10.0.0.3"),
      R("m4", "10.0.0.4", False))),
    ("an added, never started learner carries its desired name",
     desired(["m1", "m2", "m3", "m4"]), cluster(["m1", "m2", "m3"], learner="m4"),
     (R("m1", "10.0.0.1"), R("m2", "10.0.0.2"), R("m3", "10.0.0.3"),
      R("m4", "10.0.0.4", False))),
    ("a desired member not in the member list is not published",
     desired(["m1", "m2", "m3", "m4"]), cluster(["m1", "m2", "m3"]),
     (R("m1", "10.0.0.1"), R("m2", "10.0.0.2"), R("m3", "10.0.0.3"))),
    ("a healthy member that is leaving is serving and terminating, not ready",
     desired(["m1", "m2", "m4"]), cluster(["m1", "m2"], extra=["m3"]),
     (R("m1", "10.0.0.1"), R("m2", "10.0.0.2"),
      R("m3", "10.0.0.3", False, serving=True, terminating=True))),
    ("a dead member that is leaving is neither ready nor serving",
     desired(["m1", "m2"]), cluster(["m1", "m2"], extra=["m3"], dead=["m3"]),
     (R("m1", "10.0.0.1"), R("m2", "10.0.0.2"),
      R("m3", "10.0.0.3", False, serving=False, terminating=True))),
    ("no member answers MemberList: every desired member, none ready",
     desired(["m1", "m2", "m3"]), cluster(["m1", "m2", "m3"], no_member_list=True),
     (R("m1", "10.0.0.1", False), R("m2", "10.0.0.2", False), R("m3", "10.0.0.3", False))),
    ("sorted by address, whatever the config order",
     desired(["m3", "m1", "x9", "m2"]), cluster(["x9", "m2", "m3", "m1"]),
     (R("m1", "10.0.0.1"), R("m2", "10.0.0.2"), R("m3", "10.0.0.3"),
      R("x9", "10.0.24.9"))),
]


@pytest.mark.parametrize(("case", "want", "obs", "expected"), ROW_CASES,
                         ids=[c[0] for c in ROW_CASES])
def test_rows(case: str, want: Desired, obs: Observed, expected: tuple[Row, ...]) -> None:
    assert shape.rows(want, obs) == expected


def test_leaving_member_without_a_name_is_shown_by_id() -> None:
    want = desired(["m1"])
    stray = LiveMember(0xABC, "", ("https://10.0.0.7:2380",), (), learner=True)
    obs = Observed(members=(live("m1"), stray),
                   health=MappingProxyType({live("m1").id: Health(True)}))
    assert shape.rows(want, obs) == (R("m1", "10.0.0.1"),
                                     R("abc", "10.0.0.7", False, False, True))


def test_leaving_member_with_a_dns_peer_url_is_left_out() -> None:
    want = desired(["m1"])
    stray = LiveMember(7, "old", ("https://etcd-old.example:2380",),
                       ("https://etcd-old.example:2379",))
    obs = Observed(members=(live("m1"), stray),
                   health=MappingProxyType({live("m1").id: Health(True), 7: Health(True)}))
    assert [r.name for r in shape.rows(want, obs)] == ["m1"]


# ---- the objects ---------------------------------------------------------------------
def test_service_is_headless_without_selector() -> None:
    svc = shape.service(KUBE, 2379)
    assert svc == {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "cke-etcd", "namespace": "kube-system",
                     "labels": {"app.kubernetes.io/managed-by": "ckeetcd"}},
        "spec": {"type": "ClusterIP", "clusterIP": "None",
                 "ports": [{"name": "etcd", "port": 2379, "protocol": "TCP",
                            "targetPort": 2379}]},
    }


def test_endpoints_split_ready_and_not_ready() -> None:
    rows = (R("m1", "10.0.0.1"), R("m2", "10.0.0.2", False), R("m3", "10.0.0.3"))
    ep = shape.endpoints(KUBE, 2379, rows)
    assert ep["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "ckeetcd",
                                        "endpointslice.kubernetes.io/skip-mirror": "true"}
    assert ep["subsets"] == [{
        "addresses": [{"ip": "10.0.0.1", "hostname": "m1"}, {"ip": "10.0.0.3", "hostname": "m3"}],
        "notReadyAddresses": [{"ip": "10.0.0.2", "hostname": "m2"}],
        "ports": [{"name": "etcd", "port": 2379, "protocol": "TCP"}],
    }]


def test_endpoints_all_down_has_only_not_ready_addresses() -> None:
    ep = shape.endpoints(KUBE, 2379, (R("m1", "10.0.0.1", False),))
    assert ep["subsets"] == [{"notReadyAddresses": [{"ip": "10.0.0.1", "hostname": "m1"}],
                              "ports": [{"name": "etcd", "port": 2379, "protocol": "TCP"}]}]


def test_endpoint_slice_labels_conditions_and_port() -> None:
    rows = (R("m1", "10.0.0.1"), R("m3", "10.0.0.3", False, serving=True, terminating=True))
    (s,) = shape.endpoint_slices(KUBE, 2379, rows)
    assert s["apiVersion"] == "discovery.k8s.io/v1" and s["addressType"] == "IPv4"
    assert s["metadata"]["name"] == "cke-etcd"
    assert s["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "ckeetcd",
        "kubernetes.io/service-name": "cke-etcd",
        "endpointslice.kubernetes.io/managed-by": "ckeetcd",
    }
    assert s["endpoints"] == [
        {"addresses": ["10.0.0.1"], "hostname": "m1",
         "conditions": {"ready": True, "serving": True, "terminating": False}},
        {"addresses": ["10.0.0.3"], "hostname": "m3",
         "conditions": {"ready": False, "serving": True, "terminating": True}},
    ]
    assert s["ports"] == [{"name": "etcd", "port": 2379, "protocol": "TCP"}]


SLICE_CASES = [
    ("IPv4 only: one slice", ["10.0.0.1", "10.0.0.2"], [("cke-etcd", "IPv4", 2)]),
    ("IPv6 only: the slice keeps the plain name", ["fd00::1", "fd00::2"],
     [("cke-etcd", "IPv6", 2)]),
    ("mixed: IPv4 in cke-etcd, IPv6 in cke-etcd-ipv6", ["fd00::1", "10.0.0.1", "10.0.0.2"],
     [("cke-etcd", "IPv4", 2), ("cke-etcd-ipv6", "IPv6", 1)]),
    ("no members: an empty IPv4 slice", [], [("cke-etcd", "IPv4", 0)]),
]


@pytest.mark.parametrize(("case", "addresses", "expected"), SLICE_CASES,
                         ids=[c[0] for c in SLICE_CASES])
def test_slices_per_address_family(case: str, addresses: list[str],
                                   expected: list[tuple[str, str, int]]) -> None:
    rows = tuple(sorted((R(f"n{i}", a) for i, a in enumerate(addresses)), key=Row.sort_key))
    slices = shape.endpoint_slices(KUBE, 2379, rows)
    assert [(s["metadata"]["name"], s["addressType"], len(s["endpoints"]))
            for s in slices] == expected
    ep = shape.endpoints(KUBE, 2379, rows)
    assert sum(len(s.get("addresses", [])) for s in ep["subsets"]) == len(addresses)


def test_ipv6_members_from_config() -> None:
    d = Desired("t", (DesiredMember("a", "fd00::1", "https://[fd00::1]:2379",
                                    "https://[fd00::1]:2380"),
                      DesiredMember("b", "10.0.0.2", "https://10.0.0.2:2379",
                                    "https://10.0.0.2:2380")))
    a = LiveMember(1, "a", ("https://[fd00::1]:2380",), ("https://[fd00::1]:2379",))
    b = LiveMember(2, "b", ("https://10.0.0.2:2380",), ("https://10.0.0.2:2379",))
    obs = Observed(members=(a, b), health=MappingProxyType({1: Health(True), 2: Health(False)}))
    objs = shape.build(KUBE, 2379, d, obs)
    assert objs.slice_names() == ("cke-etcd", "cke-etcd-ipv6")
    assert objs.slices[1]["endpoints"][0]["addresses"] == ["fd00::1"]
    assert objs.row_summary() == {"ready": ["fd00::1"], "not_ready": ["10.0.0.2"]}


def test_names_that_are_not_dns_labels_get_no_hostname() -> None:
    rows = (R("Node_1", "10.0.0.1"), R("node.2", "10.0.0.2"), R("node-3", "10.0.0.3"))
    (s,) = shape.endpoint_slices(KUBE, 2379, rows)
    assert [e.get("hostname") for e in s["endpoints"]] == [None, None, "node-3"]


def test_namespace_name_and_port_come_from_config() -> None:
    kube = KubernetesConfig(namespace="etcd", name="main-etcd")
    objs = shape.build(kube, 12379, desired(["m1"]), cluster(["m1"]))
    for kind, obj in objs.items():
        assert obj["metadata"]["namespace"] == "etcd", kind
        assert obj["metadata"]["name"] == "main-etcd", kind
    assert objs.service["spec"]["ports"][0]["port"] == 12379
    assert objs.slices[0]["metadata"]["labels"]["kubernetes.io/service-name"] == "main-etcd"
    assert shape.slice_selector(kube) == ("kubernetes.io/service-name=main-etcd,"
                                          "endpointslice.kubernetes.io/managed-by=ckeetcd")


def test_build_is_deterministic_and_comparable() -> None:
    a = shape.build(KUBE, 2379, desired(["m1", "m2"]), cluster(["m1", "m2"]))
    b = shape.build(KUBE, 2379, desired(["m2", "m1"]), cluster(["m2", "m1"]))
    c = shape.build(KUBE, 2379, desired(["m1", "m2"]), cluster(["m1", "m2"], dead=["m2"]))
    assert a == b and a != c
    assert [k for k, _ in a.items()] == [SERVICE, SLICE, ENDPOINTS]


# ---- comparing with what the API server holds ---------------------------------------------
def served(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as the API server returns it: metadata and defaults added."""
    out = copy.deepcopy(obj)
    out["metadata"].update(uid="u-1", resourceVersion="42",
                           creationTimestamp="2024-01-01T00:00:00Z")
    if kind == SERVICE:
        spec = out["spec"]
        spec.update(clusterIPs=["None"], ipFamilies=["IPv4"], ipFamilyPolicy="SingleStack",
                    sessionAffinity="None", internalTrafficPolicy="Cluster")
        out["status"] = {"loadBalancer": {}}
    return out


OBJS = shape.build(KUBE, 2379, desired(["m1", "m2", "m3"]), cluster(["m1", "m2", "m3"],
                                                                      dead=["m3"]))
WANT = {SERVICE: OBJS.service, ENDPOINTS: OBJS.endpoints, SLICE: OBJS.slices[0]}


Edit = Callable[[dict[str, Any]], Any]


def labels(o: dict[str, Any]) -> dict[str, str]:
    return o["metadata"].setdefault("labels", {})


DIFF_CASES: list[tuple[str, str, Edit | None, bool, bool]] = [
    # (case, kind, edit of the served object, differs, needs_recreate)
    ("server defaults alone", SERVICE, None, False, False),
    ("someone else's label", SERVICE, lambda o: labels(o).update(team="x"), False, False),
    ("an annotation", ENDPOINTS, lambda o: o["metadata"].update(annotations={"a": "b"}),
     False, False),
    ("our label removed", SERVICE, lambda o: labels(o).pop(shape.LABEL_MANAGED_BY),
     True, False),
    ("a selector added", SERVICE, lambda o: o["spec"].update(selector={"app": "x"}),
     True, False),
    ("a port changed", SERVICE, lambda o: o["spec"]["ports"][0].update(port=2380),
     True, False),
    ("a nodePort added", SERVICE, lambda o: o["spec"]["ports"][0].update(nodePort=30000),
     True, False),
    ("not headless any more", SERVICE, lambda o: o["spec"].update(clusterIP="10.96.0.9"),
     True, True),
    ("protocol omitted (defaulted)", ENDPOINTS,
     lambda o: o["subsets"][0]["ports"][0].pop("protocol"), False, False),
    ("a not-ready address made ready", ENDPOINTS,
     lambda o: o["subsets"][0]["addresses"].append(
         o["subsets"][0].pop("notReadyAddresses")[0]), True, False),
    ("a nodeName added to an address", ENDPOINTS,
     lambda o: o["subsets"][0]["addresses"][0].update(nodeName="n1"), True, False),
    ("subsets emptied", ENDPOINTS, lambda o: o.update(subsets=[]), True, False),
    ("skip-mirror label flipped", ENDPOINTS,
     lambda o: labels(o).update({shape.LABEL_SKIP_MIRROR: "false"}), True, False),
    ("a condition flipped", SLICE,
     lambda o: o["endpoints"][2]["conditions"].update(ready=True), True, False),
    ("an endpoint removed", SLICE, lambda o: o["endpoints"].pop(), True, False),
    ("slice ports protocol omitted", SLICE, lambda o: o["ports"][0].pop("protocol"),
     False, False),
    ("addressType changed", SLICE, lambda o: o.update(addressType="IPv6"), True, True),
    ("service-name label changed", SLICE,
     lambda o: labels(o).update({shape.LABEL_SERVICE_NAME: "other"}), True, False),
]


@pytest.mark.parametrize(("case", "kind", "edit", "differs", "recreate"), DIFF_CASES,
                         ids=[c[0] for c in DIFF_CASES])
def test_differs_and_recreate(case: str, kind: str, edit: Edit | None, differs: bool,
                              recreate: bool) -> None:
    want = WANT[kind]
    have = served(kind, want)
    if edit is not None:
        edit(have)
    assert shape.differs(kind, want, have) is differs
    assert shape.needs_recreate(kind, want, have) is recreate
    if differs and not recreate:
        fixed = shape.merged(kind, want, have)
        assert not shape.differs(kind, want, fixed)
        assert fixed["metadata"]["resourceVersion"] == "42"
        assert fixed["metadata"]["uid"] == "u-1"


def test_merged_keeps_server_fields_and_foreign_labels() -> None:
    have = served(SERVICE, WANT[SERVICE])
    have["metadata"]["labels"]["team"] = "storage"
    have["spec"]["selector"] = {"app": "x"}
    have["spec"]["ports"][0]["port"] = 1
    fixed = shape.merged(SERVICE, WANT[SERVICE], have)
    assert fixed["metadata"]["labels"]["team"] == "storage"
    assert "selector" not in fixed["spec"]
    assert fixed["spec"]["ipFamilies"] == ["IPv4"] and fixed["spec"]["clusterIPs"] == ["None"]
    assert fixed["spec"]["ports"] == WANT[SERVICE]["spec"]["ports"]
    assert have["spec"]["ports"][0]["port"] == 1, "merged() must not modify its input"


def test_slice_update_replaces_endpoints_and_keeps_metadata() -> None:
    have = served(SLICE, WANT[SLICE])
    have["endpoints"] = []
    have["metadata"]["generation"] = 3
    fixed = shape.merged(SLICE, WANT[SLICE], have)
    assert fixed["endpoints"] == WANT[SLICE]["endpoints"]
    assert fixed["metadata"]["generation"] == 3


def test_view_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError):
        shape.view("Pod", {}, {})

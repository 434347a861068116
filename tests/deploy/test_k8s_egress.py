"""Where each pod may connect to (NetworkPolicy egress), and which addresses the AWS overlay admits: default deny,
DNS for everyone, then exactly the tiers and ports each workload uses; on AWS the load balancer's subnets, never the
whole VPC (the API trusts X-Forwarded-For from private addresses)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import pytest

from tests.support.k8s import NAME_LABEL, Doc, of_kind, pod_labels, rendered

pytestmark = pytest.mark.unit

DB, REDIS, MQTT, MQTTS, S3_AWS, S3_LOCAL = "*:5432", "*:6379", "*:1883", "*:8883", "*:443", "*:9000"
S3 = {S3_AWS, S3_LOCAL}
BASE_EGRESS: dict[str, set[str]] = {
    "pzone-front": {"pzone-api:8000"},
    "pzone-api": {"pzone-model:3000", DB, REDIS, *S3},
    "pzone-photo-worker": {"pzone-model:3000", DB, REDIS, *S3},
    "pzone-ingest": {DB, MQTT, MQTTS},
    "pzone-retrain": {"mlflow:5000", "pzone-model:3000", DB, *S3},
    "mlflow": {DB, *S3},
    "pzone-migrations": {DB},
    "pzone-log-backup": S3,
    "pzone-model": set(),
}
EXPECTED_EGRESS = {
    "local": {
        **BASE_EGRESS,
        "s3-create-bucket": {"s3:9000"},
        "postgres": set(),
        "redis": set(),
        "mosquitto": set(),
        "s3": set(),
    },
    "aws": BASE_EGRESS,
}
VPC = ipaddress.ip_network("10.0.0.0/16")
ALB_SUBNETS = {"10.0.0.0/19", "10.0.32.0/19", "10.0.64.0/19"}


def egress_token(peer: Doc | None, port: Doc) -> str:
    number = f"{port.get('port')}"
    if peer is None:
        return f"*:{number}"
    if "ipBlock" in peer:
        return f"{peer['ipBlock']['cidr']}:{number}"
    return f"{peer.get('podSelector', {}).get('matchLabels', {}).get(NAME_LABEL, '*')}:{number}"


def egress_violations(docs: Iterable[Doc], expected: dict[str, set[str]]) -> list[str]:
    """Default deny, DNS (UDP and TCP 53 to kube-dns) for every pod, then exactly the expected destinations of each
    workload, always on named ports."""
    docs = list(docs)
    policies = [p for p in of_kind(docs, "NetworkPolicy") if "Egress" in p["spec"].get("policyTypes", [])]
    problems: list[str] = []
    if not any(p["spec"].get("podSelector") == {} and not p["spec"].get("egress") for p in policies):
        problems.append("no default-deny egress NetworkPolicy")
    dns = False
    edges: dict[str, set[str]] = {}
    for policy in policies:
        name = policy["metadata"]["name"]
        selector = policy["spec"].get("podSelector", {})
        for rule in policy["spec"].get("egress", []):
            ports = rule.get("ports", [])
            if not ports:
                problems.append(f"NetworkPolicy {name}: an egress rule without ports")
            if selector == {}:
                peers = rule.get("to", [])
                to_dns = peers and all(
                    p.get("namespaceSelector", {}).get("matchLabels")
                    == {"kubernetes.io/metadata.name": "kube-system"}
                    and p.get("podSelector", {}).get("matchLabels") == {"k8s-app": "kube-dns"}
                    for p in peers
                )
                protocols = {(p.get("protocol"), p.get("port")) for p in ports}
                if to_dns and protocols == {("UDP", 53), ("TCP", 53)}:
                    dns = True
                else:
                    problems.append(f"NetworkPolicy {name} lets every pod out to more than the cluster DNS")
                continue
            target = selector.get("matchLabels", {}).get(NAME_LABEL, "?")
            for port in ports:
                for peer in rule.get("to") or [None]:
                    edges.setdefault(target, set()).add(egress_token(peer, port))
    if not dns:
        problems.append("no NetworkPolicy lets pods resolve names (UDP and TCP 53 to kube-dns)")
    workloads = {
        pod_labels(d).get(NAME_LABEL)
        for d in docs
        if d.get("kind") in ("Deployment", "StatefulSet", "Job", "CronJob")
    }
    for missing in sorted(workloads - set(expected), key=str):
        problems.append(f"{missing}: a workload with no expected egress")
    for target in sorted(set(edges) | set(expected)):
        got, want = edges.get(target, set()), expected.get(target, set())
        if got - want:
            problems.append(f"{target}: unexpected destinations {sorted(got - want)}")
        if want - got:
            problems.append(f"{target}: missing destinations {sorted(want - got)}")
    return problems


def wide_ingress(docs: Iterable[Doc]) -> list[str]:
    """ipBlocks that admit more than the load balancer's subnets."""
    problems = []
    for policy in of_kind(docs, "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                cidr = peer.get("ipBlock", {}).get("cidr")
                if cidr is not None and cidr not in ALB_SUBNETS:
                    problems.append(f"NetworkPolicy {policy['metadata']['name']} admits {cidr}")
    return problems


@pytest.mark.parametrize("overlay", ["local", "aws"])
def test_egress_is_denied_but_for_dns_and_what_each_workload_uses(overlay: str) -> None:
    assert egress_violations(rendered(overlay), EXPECTED_EGRESS[overlay]) == []


def test_aws_admits_the_load_balancers_subnets_not_the_whole_vpc() -> None:
    docs = rendered("aws")
    assert wide_ingress(docs) == []
    admitted = {
        peer["ipBlock"]["cidr"]
        for policy in of_kind(docs, "NetworkPolicy")
        for rule in policy["spec"].get("ingress", [])
        for peer in rule.get("from", [])
        if "ipBlock" in peer
    }
    assert admitted == ALB_SUBNETS
    assert all(ipaddress.ip_network(cidr).subnet_of(VPC) for cidr in admitted)


def test_the_egress_checker_reports_violations() -> None:
    allow_all = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "open"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
    }
    api = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "api-out"},
        "spec": {
            "podSelector": {"matchLabels": {NAME_LABEL: "pzone-api"}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"protocol": "TCP", "port": 25}]}],
        },
    }
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"template": {"metadata": {"labels": {NAME_LABEL: "surprise"}}}},
    }
    problems = egress_violations([allow_all, api, deployment], {"pzone-api": {DB}})
    assert "no default-deny egress NetworkPolicy" in problems
    assert "NetworkPolicy open: an egress rule without ports" in problems
    assert "NetworkPolicy open lets every pod out to more than the cluster DNS" in problems
    assert "no NetworkPolicy lets pods resolve names (UDP and TCP 53 to kube-dns)" in problems
    assert "surprise: a workload with no expected egress" in problems
    assert "pzone-api: unexpected destinations ['*:25']" in problems
    assert "pzone-api: missing destinations ['*:5432']" in problems
    vpc_wide = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "pzone-api"},
        "spec": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16"}}]}]},
    }
    assert wide_ingress([vpc_wide]) == ["NetworkPolicy pzone-api admits 10.0.0.0/16"]

"""Kubernetes manifests (k8s/): both overlays build, every object validates offline, and the deployment rules hold.

`kubectl kustomize` renders `k8s/overlays/local` and `k8s/overlays/aws`; every rendered object is checked against the
Kubernetes API schemas of ``K8S_VERSION`` (kubernetes_validate, strict: unknown fields fail) or, for the few CRD kinds
in ``CRD_CHECKS``, by a small structural check; any other kind fails. The policy checkers below are plain functions
that return a list of violations, so the negative tests can feed them bad objects and see them complain.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Callable, Iterable
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.k8s import (
    K8S,
    NAME_LABEL,
    Doc,
    build,
    containers,
    env_of,
    find,
    get,
    of_kind,
    peer_token,
    pod_labels,
    pod_spec,
    rendered,
    selects,
)
from tests.support.paths import REPO

pytestmark = pytest.mark.unit

OVERLAYS = ("local", "aws")
# The oldest Kubernetes the manifests target (the preStop `sleep` action is on by default from 1.30).
K8S_VERSION = "1.30"
NAMESPACE = "pzone"

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob")
LONG_RUNNING_KINDS = ("Deployment", "StatefulSet")
SERVING_TIERS = ("pzone-front", "pzone-api", "pzone-model")
PHASES = {"setup", "data", "migrate", "app"}

# Containers allowed a writable root filesystem, each with the reason (also written next to it in the manifest), for
# a third-party image that cannot run read-only. None at present: every container runs with a read-only root and
# emptyDirs where it writes (the data stores included).
RO_ROOT_EXCEPTIONS: dict[tuple[str, str, str], str] = {}

# Service names and ports of the deployment contract; `aws` uses RDS (ExternalName postgres), ElastiCache, S3.
CONTRACT_SERVICES = {
    "pzone-front": 8080,
    "pzone-api": 8000,
    "pzone-model": 3000,
    "mlflow": 5000,
    "postgres": 5432,
    "redis": 6379,
    "mosquitto": 1883,
    "s3": 9000,
}
AWS_ABSENT_SERVICES = {"redis", "mosquitto", "s3"}

SECRET_KEYS = {"database-url", "mlflow-database-url", "secret-key", "redis-url"}
LOCAL_SECRET_KEYS = SECRET_KEYS | {
    "postgres-password",
    "redis-password",
    "s3-access-key-id",
    "s3-secret-access-key",
    "mqtt-url",
    "mqtt-ingest-password",
    "mqtt-device-password",
}
S3_SERVICE_ACCOUNTS = ("pzone-api", "pzone-trainer", "pzone-mlflow", "pzone-log-backup")

# Who may open connections to whom (NetworkPolicy ingress). "ns:ingress-nginx": the ingress-nginx controller's
# pods; "ipBlock": addresses (on AWS the ALB's, inside the VPC). /api is routed by the Ingress straight to the API.
BASE_EDGES: dict[str, set[str]] = {
    "pzone-front": {"ns:ingress-nginx"},
    "pzone-api": {"ns:ingress-nginx", "pzone-front"},
    "pzone-model": {"pzone-api", "pzone-photo-worker", "pzone-retrain"},
    "mlflow": {"pzone-retrain"},
}
EXPECTED_EDGES: dict[str, dict[str, set[str]]] = {
    "local": {
        **BASE_EDGES,
        "postgres": {
            "pzone-api",
            "pzone-photo-worker",
            "pzone-ingest",
            "pzone-retrain",
            "pzone-migrations",
            "mlflow",
        },
        "redis": {"pzone-api", "pzone-photo-worker"},
        "mosquitto": {"pzone-ingest"},
        "s3": {
            "pzone-api",
            "pzone-photo-worker",
            "pzone-retrain",
            "mlflow",
            "pzone-log-backup",
            "s3-create-bucket",
        },
    },
    "aws": {
        **BASE_EDGES,
        "pzone-front": {"ipBlock"},
        "pzone-api": {"ipBlock", "pzone-front"},
    },
}

ECR_IMAGE = re.compile(
    r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/pzone-[a-z]+:[A-Za-z0-9_][A-Za-z0-9_.-]*$"
)


def workload_ids() -> list[Any]:
    """(overlay, kind, name) of every rendered workload; a failed build becomes one failing parameter."""
    params: list[Any] = []
    for overlay in OVERLAYS:
        try:
            docs = build(overlay)
        except (OSError, RuntimeError, subprocess.SubprocessError, yaml.YAMLError):
            params.append(pytest.param(overlay, "", "", id=f"{overlay}-build"))
            continue
        for doc in docs:
            if doc["kind"] in WORKLOAD_KINDS:
                name = doc["metadata"]["name"]
                params.append(pytest.param(overlay, doc["kind"], name, id=f"{overlay}-{doc['kind']}-{name}"))
    return params


# --- checkers: each returns the list of violations ----------------------------------------------------------------


def image_violations(image: str) -> list[str]:
    if not image:
        return ["no image"]
    if "@sha256:" in image:
        return []
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return [f"image {image} has no tag"]
    tag = last.split(":", 1)[1]
    if tag == "latest":
        return [f"image {image} uses :latest"]
    return []


def workload_violations(doc: Doc, exceptions: dict[tuple[str, str, str], str] | None = None) -> list[str]:
    """Probes, requests and limits, non-root hardened securityContext, read-only root, pinned images."""
    exceptions = RO_ROOT_EXCEPTIONS if exceptions is None else exceptions
    kind, name = doc.get("kind", "?"), doc.get("metadata", {}).get("name", "?")
    spec = pod_spec(doc)
    problems: list[str] = []
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{kind}/{name}: automountServiceAccountToken is not false")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"{kind}/{name}: {field}")
    pod_sc = spec.get("securityContext", {})
    if not spec.get("containers"):
        problems.append(f"{kind}/{name}: no containers")
    for container, is_init in containers(doc):
        where = f"{kind}/{name}/{container.get('name', '?')}"
        problems += [f"{where}: {p}" for p in image_violations(container.get("image", ""))]
        resources = container.get("resources", {})
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(section, {}):
                    problems.append(f"{where}: no {section}.{resource}")
        if kind in LONG_RUNNING_KINDS and not is_init:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(f"{where}: no {probe}")
        sc = container.get("securityContext", {})

        def effective(key: str, sc: Doc = sc) -> Any:
            return sc.get(key, pod_sc.get(key))

        if effective("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        user = effective("runAsUser")
        if not isinstance(user, int) or isinstance(user, bool) or user == 0:
            problems.append(f"{where}: runAsUser is not a numeric non-root uid")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        capabilities = sc.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if capabilities.get("add"):
            problems.append(f"{where}: capabilities added: {capabilities['add']}")
        seccomp = (effective("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: seccompProfile is not RuntimeDefault")
        if (
            sc.get("readOnlyRootFilesystem") is not True
            and (kind, name, container.get("name")) not in exceptions
        ):
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
    return problems


def serving_violations(docs: Iterable[Doc], overlay: str) -> list[str]:
    """Front, API and model tier: HPA, PDB, zone spread (enforced on AWS), rolling updates that never go below."""
    docs = list(docs)
    problems: list[str] = []
    for tier in SERVING_TIERS:
        deployment = find(docs, "Deployment", tier)
        if deployment is None:
            problems.append(f"{tier}: no Deployment")
            continue
        labels = pod_labels(deployment)
        hpas = [
            h
            for h in of_kind(docs, "HorizontalPodAutoscaler")
            if h.get("apiVersion") == "autoscaling/v2"
            and h["spec"].get("scaleTargetRef", {}).get("kind") == "Deployment"
            and h["spec"]["scaleTargetRef"].get("name") == tier
        ]
        if not hpas:
            problems.append(f"{tier}: no autoscaling/v2 HorizontalPodAutoscaler")
        elif hpas[0]["spec"].get("minReplicas", 1) < 2:
            problems.append(f"{tier}: HPA minReplicas below 2")
        if "replicas" in deployment.get("spec", {}) and hpas:
            problems.append(f"{tier}: replicas set although the HPA owns them")
        if not any(
            selects(p["spec"].get("selector", {}), labels) for p in of_kind(docs, "PodDisruptionBudget")
        ):
            problems.append(f"{tier}: no PodDisruptionBudget")
        zone = [
            c
            for c in pod_spec(deployment).get("topologySpreadConstraints", [])
            if c.get("topologyKey") == "topology.kubernetes.io/zone"
            and selects(c.get("labelSelector", {}), labels)
        ]
        if not zone:
            problems.append(f"{tier}: no topologySpreadConstraint over topology.kubernetes.io/zone")
        elif overlay == "aws" and zone[0].get("whenUnsatisfiable") != "DoNotSchedule":
            problems.append(f"{tier}: zone spread is not enforced (DoNotSchedule) on AWS")
        rolling = deployment.get("spec", {}).get("strategy", {}).get("rollingUpdate", {})
        if rolling.get("maxUnavailable") != 0:
            problems.append(f"{tier}: rolling update may take pods away before new ones are ready")
    return problems


def network_violations(docs: Iterable[Doc], expected: dict[str, set[str]]) -> list[str]:
    """Default deny for ingress, then exactly the expected edges, each on named ports."""
    policies = of_kind(docs, "NetworkPolicy")
    problems: list[str] = []
    if not any(
        p["spec"].get("podSelector") == {}
        and "Ingress" in p["spec"].get("policyTypes", [])
        and not p["spec"].get("ingress")
        for p in policies
    ):
        problems.append("no default-deny ingress NetworkPolicy")
    edges: dict[str, set[str]] = {}
    for policy in policies:
        selector = policy["spec"].get("podSelector", {})
        if selector == {}:
            if policy["spec"].get("ingress"):
                problems.append(f"NetworkPolicy {policy['metadata']['name']} admits traffic to every pod")
            continue
        target = selector.get("matchLabels", {}).get(NAME_LABEL, "?")
        for rule in policy["spec"].get("ingress", []):
            if not rule.get("ports"):
                problems.append(f"NetworkPolicy {policy['metadata']['name']}: a rule without ports")
            if not rule.get("from"):
                edges.setdefault(target, set()).add("*")
            for peer in rule.get("from", []):
                edges.setdefault(target, set()).add(peer_token(peer))
    for target in sorted(set(edges) | set(expected)):
        got, want = edges.get(target, set()), expected.get(target, set())
        if got - want:
            problems.append(f"{target}: unexpected sources {sorted(got - want)}")
        if want - got:
            problems.append(f"{target}: missing sources {sorted(want - got)}")
    return problems


def ingress_violations(docs: Iterable[Doc], overlay: str) -> list[str]:
    """/ → front, /api → API, nothing to the model tier, TLS; per overlay the class and annotations."""
    docs = list(docs)
    problems: list[str] = []
    ingresses = of_kind(docs, "Ingress")
    main = find(docs, "Ingress", "pzone")
    if main is None:
        return ["no Ingress pzone"]
    routes = {
        path["path"]: (path["backend"]["service"]["name"], path["backend"]["service"]["port"].get("number"))
        for rule in main["spec"].get("rules", [])
        for path in rule.get("http", {}).get("paths", [])
    }
    if routes.get("/") != ("pzone-front", 8080):
        problems.append(f"/ is not routed to pzone-front:8080 ({routes.get('/')})")
    if routes.get("/api") != ("pzone-api", 8000):
        problems.append(f"/api is not routed to pzone-api:8000 ({routes.get('/api')})")
    for ingress in ingresses:
        for rule in ingress["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"].get("service", {}).get("name")
                if backend not in ("pzone-front", "pzone-api"):
                    problems.append(
                        f"Ingress {ingress['metadata']['name']} routes {path['path']} to {backend}"
                    )
        if ingress["spec"].get("defaultBackend"):
            problems.append(f"Ingress {ingress['metadata']['name']} has a defaultBackend")
    annotations = main["metadata"].get("annotations", {})
    if overlay == "local":
        for ingress in ingresses:
            hosts = {rule.get("host") for rule in ingress["spec"].get("rules", [])}
            tls_hosts = {host for tls in ingress["spec"].get("tls", []) for host in tls.get("hosts", [])}
            if ingress["spec"].get("ingressClassName") != "nginx":
                problems.append(f"Ingress {ingress['metadata']['name']}: class is not nginx")
            if not hosts <= tls_hosts or not all(t.get("secretName") for t in ingress["spec"].get("tls", [])):
                problems.append(f"Ingress {ingress['metadata']['name']}: not every host has TLS")
            ingress_annotations = ingress["metadata"].get("annotations", {})
            for key in ("proxy-body-size", "limit-rps"):
                if f"nginx.ingress.kubernetes.io/{key}" not in ingress_annotations:
                    problems.append(f"Ingress {ingress['metadata']['name']}: no {key} annotation")
        issuer = annotations.get("cert-manager.io/cluster-issuer")
        if not issuer:
            problems.append("no cert-manager.io/cluster-issuer annotation")
        elif find(docs, "ClusterIssuer", issuer) is None:
            problems.append(f"ClusterIssuer {issuer} is not part of the overlay")
    elif overlay == "aws":
        if main["spec"].get("ingressClassName") != "alb":
            problems.append("class is not alb")
        expected = {
            "alb.ingress.kubernetes.io/scheme": "internet-facing",
            "alb.ingress.kubernetes.io/target-type": "ip",
        }
        for key, value in expected.items():
            if annotations.get(key) != value:
                problems.append(f"{key} is not {value}")
        for key, prefix in (
            ("alb.ingress.kubernetes.io/certificate-arn", "arn:aws:acm:"),
            ("alb.ingress.kubernetes.io/wafv2-acl-arn", "arn:aws:wafv2:"),
        ):
            if not str(annotations.get(key, "")).startswith(prefix):
                problems.append(f"{key} is not an {prefix} ARN")
        try:
            ports = json.loads(annotations.get("alb.ingress.kubernetes.io/listen-ports", "[]"))
        except json.JSONDecodeError:
            ports = []
        if not any("HTTPS" in port for port in ports):
            problems.append("the ALB does not listen on HTTPS")
        if "alb.ingress.kubernetes.io/ssl-redirect" not in annotations:
            problems.append("no ssl-redirect")
    return problems


def aws_violations(docs: Iterable[Doc]) -> list[str]:
    """No secret material in the manifests; RDS, EFS, IRSA, ECR; pzone-secrets from an ExternalSecret."""
    docs = list(docs)
    problems: list[str] = []
    for secret in of_kind(docs, "Secret"):
        if secret.get("data") or secret.get("stringData"):
            problems.append(f"Secret {secret['metadata']['name']} carries data")
    external = [
        e
        for e in of_kind(docs, "ExternalSecret")
        if e["spec"].get("target", {}).get("name") == "pzone-secrets"
    ]
    if not external:
        problems.append("no ExternalSecret for pzone-secrets")
    else:
        keys = {item.get("secretKey") for item in external[0]["spec"].get("data", [])}
        if SECRET_KEYS - keys:
            problems.append(f"ExternalSecret lacks {sorted(SECRET_KEYS - keys)}")
        store = external[0]["spec"]["secretStoreRef"]
        store_doc = find(docs, store.get("kind", "SecretStore"), store.get("name", ""))
        if store_doc is None:
            problems.append("the ExternalSecret's store is not part of the overlay")
        else:
            aws = store_doc["spec"]["provider"].get("aws", {})
            account = aws.get("auth", {}).get("jwt", {}).get("serviceAccountRef", {}).get("name", "")
            sa = find(docs, "ServiceAccount", account)
            if aws.get("service") != "SecretsManager":
                problems.append("the store does not read AWS Secrets Manager")
            if sa is None or "eks.amazonaws.com/role-arn" not in sa["metadata"].get("annotations", {}):
                problems.append("the store does not authenticate with IRSA")
    postgres = find(docs, "Service", "postgres")
    if (
        postgres is None
        or postgres["spec"].get("type") != "ExternalName"
        or not postgres["spec"].get("externalName")
    ):
        problems.append("postgres is not an ExternalName Service")
    pvc = find(docs, "PersistentVolumeClaim", "pzone-shared")
    sc = find(docs, "StorageClass", "efs-sc")
    if (
        pvc is None
        or pvc["spec"].get("storageClassName") != "efs-sc"
        or pvc["spec"].get("accessModes") != ["ReadWriteMany"]
    ):
        problems.append("pzone-shared is not a ReadWriteMany claim on efs-sc")
    if sc is None or sc.get("provisioner") != "efs.csi.aws.com":
        problems.append("StorageClass efs-sc is not on efs.csi.aws.com")
    for name in S3_SERVICE_ACCOUNTS:
        sa = find(docs, "ServiceAccount", name)
        if sa is None or not str(
            sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
        ).startswith("arn:aws:iam::"):
            problems.append(f"ServiceAccount {name} has no IRSA role")
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            for container, _ in containers(doc):
                image = container["image"]
                if image.rsplit("/", 1)[-1].startswith("pzone-") and not ECR_IMAGE.match(image):
                    problems.append(f"{image} is not an ECR image")
    return problems


def _need(doc: Doc, *paths: str) -> list[str]:
    problems = []
    for path in paths:
        node: Any = doc
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node in (None, "", [], {}):
            problems.append(f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}: no {path}")
    return problems


def _cluster_issuer(doc: Doc) -> list[str]:
    problems = _need(doc, "metadata.name")
    if doc.get("metadata", {}).get("namespace"):
        problems.append("ClusterIssuer is cluster-scoped but has a namespace")
    kinds = set(doc.get("spec", {})) & {"selfSigned", "acme", "ca", "vault", "venafi"}
    if len(kinds) != 1:
        problems.append(f"ClusterIssuer needs exactly one issuer type, has {sorted(kinds)}")
    return problems


def _certificate(doc: Doc) -> list[str]:
    return _need(doc, "metadata.name", "spec.secretName", "spec.issuerRef.name", "spec.dnsNames")


def _secret_store(doc: Doc) -> list[str]:
    # AWS Secrets Manager with IRSA: ESO authenticates as a ServiceAccount that carries the IAM role.
    return _need(
        doc,
        "metadata.name",
        "spec.provider.aws.service",
        "spec.provider.aws.region",
        "spec.provider.aws.auth.jwt.serviceAccountRef.name",
    )


def _external_secret(doc: Doc) -> list[str]:
    problems = _need(doc, "metadata.name", "spec.secretStoreRef.name", "spec.target.name")
    store_kind = doc.get("spec", {}).get("secretStoreRef", {}).get("kind", "SecretStore")
    if store_kind not in ("SecretStore", "ClusterSecretStore"):
        problems.append(f"ExternalSecret: unknown store kind {store_kind}")
    data = doc.get("spec", {}).get("data", [])
    if not data and not doc.get("spec", {}).get("dataFrom"):
        problems.append("ExternalSecret: neither data nor dataFrom")
    for item in data:
        if not item.get("secretKey") or not item.get("remoteRef", {}).get("key"):
            problems.append(f"ExternalSecret: incomplete item {item}")
    return problems


def _target_group_binding(doc: Doc) -> list[str]:
    return _need(doc, "metadata.name", "spec.serviceRef.name", "spec.serviceRef.port", "spec.targetGroupARN")


# CRD kinds the Kubernetes schemas do not know: allowed, each with its own structural check. Any other unknown kind
# fails the schema test.
CRD_CHECKS: dict[tuple[str, str], Callable[[Doc], list[str]]] = {
    ("cert-manager.io/v1", "ClusterIssuer"): _cluster_issuer,
    ("cert-manager.io/v1", "Certificate"): _certificate,
    ("external-secrets.io/v1", "SecretStore"): _secret_store,
    ("external-secrets.io/v1", "ClusterSecretStore"): _secret_store,
    ("external-secrets.io/v1", "ExternalSecret"): _external_secret,
    ("external-secrets.io/v1beta1", "SecretStore"): _secret_store,
    ("external-secrets.io/v1beta1", "ClusterSecretStore"): _secret_store,
    ("external-secrets.io/v1beta1", "ExternalSecret"): _external_secret,
    ("elbv2.k8s.aws/v1beta1", "TargetGroupBinding"): _target_group_binding,
}


def schema_violations(doc: Doc, version: str = K8S_VERSION) -> list[str]:
    """The object against the Kubernetes API schema of ``version`` (strict), or its CRD check; else unknown."""
    key = (str(doc.get("apiVersion")), str(doc.get("kind")))
    where = f"{key[1]}/{doc.get('metadata', {}).get('name')}"
    if key in CRD_CHECKS:
        return [f"{where}: {p}" for p in CRD_CHECKS[key](doc)]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: unknown kind {key[0]} {key[1]} (not in Kubernetes {version}, not an allowed CRD)"]
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        return [f"{where}: {path}: {exc.message}"]
    return []


def reference_violations(docs: Iterable[Doc], overlay: str) -> list[str]:
    """Every Secret, ConfigMap, PVC and ServiceAccount a pod names exists in the build (secret keys too)."""
    docs = list(docs)
    problems: list[str] = []
    secret_keys: dict[str, set[str]] = {}
    for secret in of_kind(docs, "Secret"):
        secret_keys[secret["metadata"]["name"]] = set(secret.get("data", {})) | set(
            secret.get("stringData", {})
        )
    for external in of_kind(docs, "ExternalSecret"):
        target = external["spec"]["target"]["name"]
        secret_keys[target] = {item["secretKey"] for item in external["spec"].get("data", [])}
    configmaps = {c["metadata"]["name"]: set(c.get("data", {})) for c in of_kind(docs, "ConfigMap")}
    pvcs = {p["metadata"]["name"] for p in of_kind(docs, "PersistentVolumeClaim")}
    accounts = {s["metadata"]["name"] for s in of_kind(docs, "ServiceAccount")}
    for doc in docs:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        where = f"{overlay} {doc['kind']}/{doc['metadata']['name']}"
        spec = pod_spec(doc)
        account = spec.get("serviceAccountName")
        if account and account not in accounts:
            problems.append(f"{where}: ServiceAccount {account} missing")
        claims = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume and volume["persistentVolumeClaim"]["claimName"] not in pvcs:
                problems.append(f"{where}: PVC {volume['persistentVolumeClaim']['claimName']} missing")
            if "configMap" in volume and volume["configMap"]["name"] not in configmaps:
                problems.append(f"{where}: ConfigMap {volume['configMap']['name']} missing")
        volume_names = {v["name"] for v in spec.get("volumes", [])} | claims
        for container, _ in containers(doc):
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volume_names:
                    problems.append(f"{where}: mount of unknown volume {mount['name']}")
            for source in container.get("envFrom", []):
                name = source.get("configMapRef", {}).get("name")
                if name and name not in configmaps:
                    problems.append(f"{where}: ConfigMap {name} missing")
            for item in container.get("env", []):
                ref = item.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    name, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
                    optional = ref["secretKeyRef"].get("optional", False)
                    if name not in secret_keys:
                        problems.append(f"{where}: Secret {name} missing")
                    elif key not in secret_keys[name] and not optional:
                        problems.append(f"{where}: Secret {name} has no key {key}")
                if "configMapKeyRef" in ref:
                    name, key = ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
                    if key not in configmaps.get(name, set()):
                        problems.append(f"{where}: ConfigMap {name} has no key {key}")
    return problems


# --- the overlays build and validate -----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds(overlay: str) -> None:
    docs = rendered(overlay)
    kinds = {doc["kind"] for doc in docs}
    assert {"Namespace", "Deployment", "StatefulSet", "Service", "Ingress", "NetworkPolicy"} <= kinds
    ids = [(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"]) for doc in docs]
    assert len(ids) == len(set(ids)), "duplicate objects"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    problems = [p for doc in rendered(overlay) for p in schema_violations(doc)]
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_labelled_and_namespaced(overlay: str) -> None:
    cluster_scoped = {"Namespace", "ClusterIssuer", "ClusterSecretStore", "StorageClass", "IngressClass"}
    problems = []
    for doc in rendered(overlay):
        meta = doc["metadata"]
        where = f"{doc['kind']}/{meta['name']}"
        if meta.get("labels", {}).get("pzone.io/phase") not in PHASES:
            problems.append(f"{where}: pzone.io/phase label missing")
        if meta.get("labels", {}).get("app.kubernetes.io/part-of") != "pzone":
            problems.append(f"{where}: part-of label missing")
        namespace = meta.get("namespace")
        if doc["kind"] in cluster_scoped:
            if namespace:
                problems.append(f"{where}: cluster-scoped but has namespace {namespace}")
        elif namespace != NAMESPACE:
            problems.append(f"{where}: namespace {namespace!r}")
    assert problems == []
    namespace_doc = get(rendered(overlay), "Namespace", NAMESPACE)
    assert namespace_doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(overlay: str) -> None:
    assert reference_violations(rendered(overlay), overlay) == []


# --- policy ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("overlay", "kind", "name"), workload_ids())
def test_workload_policy(overlay: str, kind: str, name: str) -> None:
    doc = get(rendered(overlay), kind, name)
    assert workload_violations(doc) == []
    assert pod_labels(doc).get(NAME_LABEL) == name  # what the NetworkPolicies and PDBs select on


def test_read_only_root_exceptions_are_used_and_explicit() -> None:
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        for (kind, name, container_name), reason in RO_ROOT_EXCEPTIONS.items():
            assert reason
            container = next(c for c, _ in containers(get(docs, kind, name)) if c["name"] == container_name)
            assert container["securityContext"]["readOnlyRootFilesystem"] is False  # stated, not forgotten


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_tiers_scale_spread_and_survive_disruptions(overlay: str) -> None:
    assert serving_violations(rendered(overlay), overlay) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_default_deny_and_allowed_edges(overlay: str) -> None:
    assert network_violations(rendered(overlay), EXPECTED_EDGES[overlay]) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_routes_and_tls(overlay: str) -> None:
    assert ingress_violations(rendered(overlay), overlay) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_of_the_contract(overlay: str) -> None:
    docs = rendered(overlay)
    templates = [pod_labels(doc) for doc in docs if doc["kind"] in WORKLOAD_KINDS]
    for name, port in CONTRACT_SERVICES.items():
        service = find(docs, "Service", name)
        if overlay == "aws" and name in AWS_ABSENT_SERVICES:
            assert service is None, name
            continue
        assert service is not None, name
        assert [p["port"] for p in service["spec"]["ports"]] == [port], name
        if service["spec"].get("type") == "ExternalName":
            continue
        assert any(selects({"matchLabels": service["spec"]["selector"]}, labels) for labels in templates), (
            name
        )
    if overlay == "aws":
        assert get(docs, "Service", "postgres")["spec"]["type"] == "ExternalName"


def test_aws_has_no_secret_material_and_uses_rds_efs_irsa_ecr() -> None:
    assert aws_violations(rendered("aws")) == []


def test_local_secret_is_generated_from_fake_dev_values() -> None:
    docs = rendered("local")
    secret = get(docs, "Secret", "pzone-secrets")
    values = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert set(values) >= LOCAL_SECRET_KEYS
    for key in (
        "database-url",
        "mlflow-database-url",
        "postgres-password",
        "redis-password",
        "redis-url",
        "secret-key",
        "s3-secret-access-key",
    ):
        assert "dev-only" in values[key], key
    ignored = (K8S / ".gitignore").read_text()
    assert "secrets.env" in ignored


def test_components_do_what_the_contract_says() -> None:
    for overlay in OVERLAYS:
        docs = rendered(overlay)

        def container(kind: str, name: str, docs: tuple[Doc, ...] = docs) -> Doc:
            return next(c for c, init in containers(get(docs, kind, name)) if not init)

        front = get(docs, "Deployment", "pzone-front")
        mounts = {m["mountPath"]: m for m in container("Deployment", "pzone-front")["volumeMounts"]}
        nginx_mount = mounts["/etc/nginx/nginx.conf"]
        assert nginx_mount["subPath"] == "nginx.conf"
        volume = next(v for v in pod_spec(front)["volumes"] if v["name"] == nginx_mount["name"])
        assert "nginx.conf" in get(docs, "ConfigMap", "pzone-front-nginx")["data"]
        assert volume["configMap"]["name"] == get(docs, "ConfigMap", "pzone-front-nginx")["metadata"]["name"]

        assert container("Deployment", "pzone-api")["command"][:2] == ["pzone", "api"]
        assert container("Deployment", "pzone-photo-worker")["command"] == ["pzone", "photos", "worker"]
        for kind, name in (
            ("Deployment", "pzone-api"),
            ("Deployment", "pzone-photo-worker"),
            ("StatefulSet", "pzone-ingest"),
            ("CronJob", "pzone-log-backup"),
        ):
            c = container(kind, name)
            assert env_of(c)["PZONE_LOG_DIR"]["value"] == "/var/log/pzone", name
            log_mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/var/log/pzone")
            volume = next(
                v for v in pod_spec(get(docs, kind, name))["volumes"] if v["name"] == log_mount["name"]
            )
            assert volume["persistentVolumeClaim"]["claimName"] == "pzone-shared", name

        ingest = container("StatefulSet", "pzone-ingest")
        assert ingest["command"] == ["pzone", "ingest"]
        assert (
            env_of(ingest)["PZONE_INGEST_CLIENT_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        )
        # One worker on a plain subscription, which Mosquitto restores through a restart (a shared one it loses).
        assert env_of(ingest)["PZONE_INGEST_SHARED_GROUP"]["value"] == ""
        # (none on AWS, where IoT Core's rule and the Lambda ingest)
        assert get(docs, "StatefulSet", "pzone-ingest")["spec"]["replicas"] == (
            1 if overlay == "local" else 0
        )

        migrations = get(docs, "Job", "pzone-migrations")
        assert container("Job", "pzone-migrations")["command"] == ["pzone", "db", "upgrade"]
        assert "/pzone-migrations:" in "/" + container("Job", "pzone-migrations")["image"]
        assert migrations["metadata"]["labels"]["pzone.io/phase"] == "migrate"

        retrain = get(docs, "CronJob", "pzone-retrain")
        assert retrain["spec"]["concurrencyPolicy"] == "Forbid"
        assert "exec pzone retrain --auto" in " ".join(container("CronJob", "pzone-retrain")["command"])
        assert "/pzone-trainer:" in "/" + container("CronJob", "pzone-retrain")["image"]
        # Retrain waits for the tier to serve a new champion, which it finds in the store both mount.
        trainer_container = container("CronJob", "pzone-retrain")
        assert env_of(trainer_container)["PZONE_MODEL_TIER_URL"]["value"] == "http://pzone-model:3000"
        # Promotions push each model's dataset to the DVC remote in the photos bucket, pzone-config's (envFrom).
        assert env_of(trainer_container)["PZONE_DVC_REMOTE_URL"]["value"] == "s3://$(PZONE_S3_BUCKET)/dvc"
        config_map = get(docs, "ConfigMap", "pzone-config")
        assert config_map["data"]["PZONE_S3_BUCKET"]
        sources = [source["configMapRef"]["name"] for source in trainer_container.get("envFrom", [])]
        assert config_map["metadata"]["name"] in sources

        assert container("CronJob", "pzone-log-backup")["command"] == [
            "pzone",
            "logs",
            "backup",
            "--source",
            "/var/log/pzone",
        ]

        mlflow = container("Deployment", "mlflow")
        assert mlflow["command"] == ["mlflow", "server"]
        assert "--default-artifact-root=$(PZONE_MLFLOW_ARTIFACT_ROOT)" in mlflow["args"]
        config = get(docs, "ConfigMap", "pzone-config")["data"]
        assert config["PZONE_MLFLOW_ARTIFACT_ROOT"] == f"s3://{config['PZONE_S3_BUCKET']}/mlflow"
        assert (
            env_of(mlflow)["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["key"]
            == "mlflow-database-url"
        )

        # The login limiter needs the client's address: proxies trusted by address, not "*".
        trusted = env_of(container("Deployment", "pzone-api"))["FORWARDED_ALLOW_IPS"]["value"]
        assert "*" not in trusted and "10.0.0.0/8" in trusted

        model = get(docs, "Deployment", "pzone-model")
        model_container = container("Deployment", "pzone-model")
        assert model["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        assert model_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert model_container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert pod_spec(model)["terminationGracePeriodSeconds"] > 30
        assert "preStop" in model_container["lifecycle"]
        assert "command" not in model_container  # the image's own: bentoml serve on the shared store
        assert env_of(model_container)["PZONE_MODEL_WATCH_INTERVAL_S"]["value"] != "0"
        store_mount = {m["name"]: m for m in model_container["volumeMounts"]}["models"]
        trainer_mount = {m["name"]: m for m in trainer_container["volumeMounts"]}["work"]
        # The tier's model store ($BENTOML_HOME/models) is the trainer's (its BENTOML_HOME: /var/lib/pzone/bentoml).
        bentoml_home = env_of(model_container)["BENTOML_HOME"]["value"]
        assert store_mount["mountPath"] == bentoml_home + "/models" and store_mount["readOnly"] is True
        assert trainer_mount["mountPath"] == "/var/lib/pzone"
        assert store_mount["subPath"] == trainer_mount["subPath"] + "/bentoml/models"
        assert "BENTOML_HOME=/var/lib/pzone/bentoml" in (REPO / "Dockerfile").read_text()
        volumes = {
            name: {v["name"]: v for v in pod_spec(get(docs, kind, name))["volumes"]}
            for kind, name in (("Deployment", "pzone-model"), ("CronJob", "pzone-retrain"))
        }
        assert volumes["pzone-model"]["models"]["persistentVolumeClaim"]["claimName"] == "pzone-shared"
        assert volumes["pzone-retrain"]["work"]["persistentVolumeClaim"]["claimName"] == "pzone-shared"

        if overlay == "local":
            assert config["PZONE_S3_ENDPOINT_URL"] == "http://s3:9000"
            for kind, name in (("StatefulSet", n) for n in ("postgres", "redis", "mosquitto", "s3")):
                assert get(docs, kind, name)["spec"]["volumeClaimTemplates"], name
        else:
            assert "PZONE_S3_ENDPOINT_URL" not in config


# --- the checkers catch what they are meant to catch ---------------------------------------------------------------


def bad_deployment() -> Doc:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bad"},
        "spec": {
            "selector": {"matchLabels": {NAME_LABEL: "bad"}},
            "template": {
                "metadata": {"labels": {NAME_LABEL: "bad"}},
                "spec": {
                    "hostNetwork": True,
                    "securityContext": {"runAsUser": 0},
                    "initContainers": [{"name": "init", "image": "busybox"}],
                    "containers": [
                        {
                            "name": "app",
                            "image": "nginx:latest",
                            "resources": {"requests": {"cpu": "100m"}},
                            "securityContext": {
                                "allowPrivilegeEscalation": True,
                                "capabilities": {"add": ["NET_ADMIN"]},
                                "readOnlyRootFilesystem": False,
                            },
                        }
                    ],
                },
            },
        },
    }


def test_workload_checker_reports_every_violation() -> None:
    problems = workload_violations(bad_deployment())
    expected = [
        "automountServiceAccountToken is not false",
        "hostNetwork",
        "bad/app: image nginx:latest uses :latest",
        "bad/init: image busybox has no tag",
        "bad/app: no requests.memory",
        "bad/app: no limits.cpu",
        "bad/app: no limits.memory",
        "bad/init: no requests.cpu",
        "bad/app: no readinessProbe",
        "bad/app: no livenessProbe",
        "bad/app: runAsNonRoot is not true",
        "bad/app: runAsUser is not a numeric non-root uid",
        "bad/app: allowPrivilegeEscalation is not false",
        "bad/app: capabilities do not drop ALL",
        "bad/app: capabilities added",
        "bad/app: seccompProfile is not RuntimeDefault",
        "bad/app: readOnlyRootFilesystem is not true",
        "bad/init: readOnlyRootFilesystem is not true",
    ]
    for message in expected:
        assert any(message in problem for problem in problems), (message, problems)
    assert not any("bad/init: no readinessProbe" in p for p in problems)  # init containers run to completion
    # The exception list is what lets a container keep a writable root, and only that one container.
    excepted = workload_violations(bad_deployment(), {("Deployment", "bad", "app"): "reason"})
    assert not any("bad/app: readOnlyRootFilesystem" in p for p in excepted)
    assert any("bad/init: readOnlyRootFilesystem" in p for p in excepted)
    assert image_violations("registry.example.com:5000/pzone-api") == [
        "image registry.example.com:5000/pzone-api has no tag"
    ]
    assert image_violations("pzone-api@sha256:" + "0" * 64) == []


def test_serving_network_ingress_and_aws_checkers_report_violations() -> None:
    deployment = bad_deployment()
    deployment["metadata"]["name"] = "pzone-model"
    deployment["spec"]["replicas"] = 1
    problems = serving_violations([deployment], "aws")
    for message in (
        "pzone-front: no Deployment",
        "pzone-model: no autoscaling/v2 HorizontalPodAutoscaler",
        "pzone-model: no PodDisruptionBudget",
        "pzone-model: no topologySpreadConstraint",
        "pzone-model: rolling update",
    ):
        assert any(message in p for p in problems), (message, problems)

    open_policy = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "model"},
        "spec": {
            "podSelector": {"matchLabels": {NAME_LABEL: "pzone-model"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}}]}
            ],
        },
    }
    problems = network_violations([open_policy], {"pzone-model": {"pzone-api"}})
    assert "no default-deny ingress NetworkPolicy" in problems
    assert "pzone-model: unexpected sources ['ns:x']" in problems
    assert "pzone-model: missing sources ['pzone-api']" in problems
    assert any("a rule without ports" in p for p in problems)

    ingress = {
        "kind": "Ingress",
        "metadata": {"name": "pzone", "annotations": {}},
        "spec": {
            "rules": [
                {
                    "host": "x",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "backend": {"service": {"name": "pzone-model", "port": {"number": 3000}}},
                            }
                        ]
                    },
                }
            ]
        },
    }
    problems = ingress_violations([ingress], "local")
    assert any("routes / to pzone-model" in p for p in problems)
    assert any("/api is not routed" in p for p in problems)
    assert any("not every host has TLS" in p for p in problems)
    assert "no cert-manager.io/cluster-issuer annotation" in problems
    problems = ingress_violations([ingress], "aws")
    assert "class is not alb" in problems
    assert "the ALB does not listen on HTTPS" in problems
    assert any("wafv2-acl-arn" in p for p in problems)

    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pzone-secrets"},
        "data": {"a": "Yg=="},
    }
    problems = aws_violations([secret, deployment])
    assert "Secret pzone-secrets carries data" in problems
    assert "no ExternalSecret for pzone-secrets" in problems
    assert "postgres is not an ExternalName Service" in problems
    assert "ServiceAccount pzone-api has no IRSA role" in problems


def test_schema_checker_rejects_unknown_kinds_and_bad_fields() -> None:
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert "unknown kind" in schema_violations(unknown)[0]
    typo = bad_deployment()
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    assert any("imagePullPolcy" in p for p in schema_violations(typo))
    incomplete = {"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret", "metadata": {"name": "e"}}
    problems = schema_violations(incomplete)
    assert any("spec.target.name" in p for p in problems)
    assert any("neither data nor dataFrom" in p for p in problems)
    issuer = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "ClusterIssuer",
        "metadata": {"name": "i", "namespace": "pzone"},
        "spec": {},
    }
    assert len(schema_violations(issuer)) == 2
    dangling = bad_deployment()
    dangling["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}
    ]
    assert reference_violations([dangling], "test") == ["test Deployment/bad: Secret nope missing"]


def test_staged_uploads_expire_in_the_local_bucket() -> None:
    """The bucket job creates the bucket first (an init container), then its lifecycle rule: uploads/ expire after a
    day, so that a PUT that came after its photo was stored or refused does not stay (the API sweeps them too)."""
    job = get(rendered("local"), "Job", "s3-create-bucket")
    spec = pod_spec(job)
    (create,) = spec["initContainers"]
    (expire,) = spec["containers"]
    assert create["command"][-3:] == ["mb", "--ignore-existing", "local/$(PZONE_S3_BUCKET)"]
    command = expire["command"]
    assert command[3:6] == ["ilm", "rule", "add"] and command[-1] == "local/$(PZONE_S3_BUCKET)"
    assert command[command.index("--prefix") + 1] == "uploads/"
    assert command[command.index("--expire-days") + 1] == "1"
    assert env_of(expire) == env_of(create)  # the same alias and keys

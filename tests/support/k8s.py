"""The rendered Kubernetes manifests for tests: `kubectl kustomize` of an overlay, and lookups in its objects."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import REPO

Doc = dict[str, Any]

K8S = REPO / "k8s"
NAME_LABEL = "app.kubernetes.io/name"


def kubectl() -> str | None:
    found = shutil.which("kubectl")
    if found:
        return found
    return "/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else None


@functools.cache
def build(overlay: str) -> tuple[Doc, ...]:
    exe = kubectl()
    if exe is None:
        raise FileNotFoundError("kubectl is not installed")
    proc = subprocess.run(
        [exe, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize k8s/overlays/{overlay} failed:\n{proc.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def rendered(overlay: str) -> tuple[Doc, ...]:
    if kubectl() is None:
        pytest.skip("kubectl is not installed")
    return build(overlay)


def find(docs: Iterable[Doc], kind: str, name: str) -> Doc | None:
    """The object of that kind and name; generated ConfigMaps/Secrets match on their name before the hash."""
    for doc in docs:
        if doc.get("kind") != kind:
            continue
        actual = doc.get("metadata", {}).get("name", "")
        if actual == name or (
            kind in ("ConfigMap", "Secret") and re.fullmatch(rf"{name}-[a-z0-9]{{10}}", actual)
        ):
            return doc
    return None


def get(docs: Iterable[Doc], kind: str, name: str) -> Doc:
    doc = find(docs, kind, name)
    assert doc is not None, f"no {kind} {name}"
    return doc


def of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc.get("kind") == kind]


def pod_spec(doc: Doc) -> Doc:
    spec = doc.get("spec", {})
    if doc.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return dict(spec.get("template", {}).get("spec", {}))


def pod_labels(doc: Doc) -> dict[str, str]:
    spec = doc.get("spec", {})
    if doc.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return dict(spec.get("template", {}).get("metadata", {}).get("labels", {}))


def containers(doc: Doc, *, init: bool = True) -> Iterator[tuple[Doc, bool]]:
    spec = pod_spec(doc)
    for container in spec.get("containers", []):
        yield container, False
    if init:
        for container in spec.get("initContainers", []):
            yield container, True


def env_of(container: Doc) -> dict[str, Doc]:
    return {item["name"]: item for item in container.get("env", [])}


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def peer_token(peer: Doc) -> str:
    if "ipBlock" in peer:
        return "ipBlock"
    if "namespaceSelector" in peer:
        names = peer["namespaceSelector"].get("matchLabels", {}).get("kubernetes.io/metadata.name")
        return f"ns:{names}" if names else "ns:*"
    return str(peer.get("podSelector", {}).get("matchLabels", {}).get(NAME_LABEL, "*"))

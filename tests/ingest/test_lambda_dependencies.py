"""The Lambda stays small: the ingest package's base install pulls no ML stack, no web framework, no MQTT client."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, requires

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.unit

FORBIDDEN = {
    "torch",
    "torchvision",
    "bentoml",
    "mlflow",
    "fastapi",
    "starlette",
    "uvicorn",
    "paho-mqtt",
    "amqtt",
}


def base_closure(distribution: str) -> set[str]:
    """Every distribution the base install (no extras) of ``distribution`` brings, transitively."""
    seen: set[str] = set()
    todo = [distribution]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = requires(name) or []
        except PackageNotFoundError:
            continue
        for text in requirements:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name.lower().replace("_", "-"))
    return seen


def test_lambda_dependency_closure_is_small() -> None:
    closure = base_closure("pzone-ingest")
    assert "pzone-core" in closure and "sqlalchemy" in closure
    assert not closure & FORBIDDEN, closure & FORBIDDEN


def test_worker_extra_brings_the_mqtt_client() -> None:
    extras = [Requirement(text) for text in requires("pzone-ingest") or []]
    assert any(r.name == "paho-mqtt" and r.marker is not None for r in extras)

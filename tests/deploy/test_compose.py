"""docker-compose.yml without `docker compose` (not installed here): the whole stack, its start order, its secrets.

Every service has a pinned image or a build whose Dockerfile exists, health checks on the long-running ones,
depends_on conditions that make sense, migrations before the apps, no secret literals, and every variable it needs
is in deploy/compose/example.env with a fake value.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.support.dockerfile import (
    COMMANDS,
    IMAGES,
    SECRET_NAME,
    URL_WITH_PASSWORD,
    is_pinned,
    parse_dockerfile,
)
from tests.support.paths import REPO

pytestmark = pytest.mark.unit


COMPOSE = REPO / "docker-compose.yml"
EXAMPLE_ENV = REPO / "deploy" / "compose" / "example.env"
ONE_SHOT = {"migrations", "s3-init", "pzone-trainer"}
VARIABLE = re.compile(r"\$\{(\w+)(?::?[?-][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def example_env() -> dict[str, str]:
    pairs = {}
    for raw in EXAMPLE_ENV.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, line
            pairs[key] = value
    return pairs


def test_compose_runs_the_whole_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {
        "pzone-front",
        "pzone-api",
        "pzone-photo-worker",
        "pzone-model",
        "pzone-ingest",
        "migrations",
        "postgres",
        "redis",
        "mosquitto",
        "s3",
        "s3-init",
        "mlflow",
    }
    for name, service in services.items():
        image = service.get("image", "")
        if "build" in service:
            build = service["build"]
            assert build["context"] == "."
            dockerfile = REPO / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile}"
            assert parse_dockerfile(dockerfile).stage(build["target"]), f"{name}: {build['target']}"
            assert re.fullmatch(r"pzone-[a-z]+:0\.1\.0", image), f"{name}: {image}"
        else:
            assert is_pinned(image), f"{name}: image {image!r} is not pinned"
        if name not in ONE_SHOT:
            test = service.get("healthcheck", {}).get("test")
            assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no health check"
            assert service.get("restart") == "unless-stopped", name
        else:
            assert service.get("restart") == "no", name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is published beyond this host"
    # Each image is the target of its name in the Dockerfile of the contract.
    built = {
        s["image"].split(":")[0]: (REPO / s["build"].get("dockerfile", "Dockerfile"), s["build"]["target"])
        for s in services.values()
        if "build" in s
    }
    assert built == {image: (IMAGES[image], image) for image in IMAGES if image != "pzone-model-bento"}
    assert services["pzone-photo-worker"]["command"] == ["pzone", "photos", "worker"]
    assert (REPO / "deploy" / "compose" / "mosquitto.conf").is_file()
    mounted = [v.split(":")[0] for s in services.values() for v in s.get("volumes", [])]
    assert "./deploy/compose/mosquitto.conf" in mounted
    for source in mounted:
        assert source.startswith("./") or source in compose["volumes"], source
        if source.startswith("./"):
            assert (REPO / source).exists(), source


def test_compose_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} → {dependency}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"
            else:
                assert condition == "service_completed_successfully", f"{name} → {dependency}: {condition}"
                assert dependency in ONE_SHOT
    for app in ("pzone-api", "pzone-photo-worker", "pzone-ingest", "pzone-trainer"):
        assert services[app]["depends_on"]["migrations"] == {"condition": "service_completed_successfully"}
    assert services["migrations"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["pzone-front"]["depends_on"]["pzone-api"]["condition"] == "service_healthy"
    assert services["pzone-api"]["depends_on"]["s3-init"]["condition"] == "service_completed_successfully"


def test_compose_holds_no_secret_and_the_example_env_has_all_it_needs(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    example = example_env()
    used = {m.group(1) for m in VARIABLE.finditer(yaml.safe_dump(compose))}  # values only, not comments
    assert used == set(example), f"only in compose: {used - set(example)}, unused: {set(example) - used}"
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert "dev-only" in value, f"{key}: an example value must be obviously fake"
            assert value not in text
    for name, service in compose["services"].items():
        assert "env_file" not in service, f"{name}: variables come from .env by interpolation, one by one"
        for key, value in (service.get("environment") or {}).items():
            value = str(value)
            if SECRET_NAME.search(key) or URL_WITH_PASSWORD.search(value) or key == "MC_HOST_pzone":
                assert VARIABLE.search(value), f"{name}: {key} is a literal secret"
                assert not URL_WITH_PASSWORD.search(VARIABLE.sub("", value)), f"{name}: {key}"
    # .env, where the real values go, never reaches Git.
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO, timeout=30)
    assert ignored.returncode == 0, ".env must be git-ignored"


def test_compose_gives_each_service_only_its_secrets(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def secrets(name: str) -> set[str]:
        values = " ".join(str(v) for v in (services[name].get("environment") or {}).values())
        return {m.group(1) for m in VARIABLE.finditer(values)}

    assert secrets("pzone-front") == set()
    assert secrets("pzone-model") == set()
    assert secrets("pzone-ingest") == {
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_DB",
        "MQTT_INGEST_PASSWORD",
    }
    assert secrets("mosquitto") == {"MQTT_INGEST_PASSWORD", "MQTT_DEVICE_PASSWORD"}
    assert secrets("migrations") == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    assert "REDIS_PASSWORD" in secrets("pzone-api") and "MINIO_ROOT_PASSWORD" in secrets("pzone-api")


def test_compose_and_nginx_agree_on_names_and_ports(compose: dict[str, Any]) -> None:
    conf = (REPO / "k8s" / "base" / "front" / "nginx.conf").read_text()
    assert "server pzone-api:8000;" in conf and "listen 8080;" in conf
    services = compose["services"]
    assert COMMANDS["pzone-api"][-1] == "8000" and "pzone-api" in services
    assert services["pzone-front"]["ports"] == ["127.0.0.1:8080:8080"]
    front = parse_dockerfile(IMAGES["pzone-front"])
    copies = {tuple(c.value.split()) for c in front.stages[-1].all("COPY")}
    assert ("k8s/base/front/nginx.conf", "/etc/nginx/nginx.conf") in copies
    assert ("serving/api/src/pzone_api/static/", "/usr/share/nginx/html/") in copies
    assert "root /usr/share/nginx/html;" in conf
    assert services["pzone-api"]["environment"]["PZONE_MODEL_TIER_URL"] == "http://pzone-model:3000"


def test_compose_health_checks_are_bounded(compose: dict[str, Any]) -> None:
    """Every health check has its own timeout, interval and retries (so `docker compose up --wait` ends)."""
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        if check:
            assert check.get("timeout") and check.get("interval") and check.get("retries"), name
            assert float(check["timeout"].rstrip("s")) <= float(check["interval"].rstrip("s")), name


def test_the_trainer_keeps_each_models_dataset_in_the_photos_bucket(compose: dict[str, Any]) -> None:
    """Promotions push the dataset to the DVC remote: an S3 prefix of the bucket s3-init creates, through MinIO."""
    trainer = compose["services"]["pzone-trainer"]["environment"]
    assert trainer["PZONE_DVC_REMOTE_URL"] == f"s3://{trainer['PZONE_S3_BUCKET']}/dvc"
    assert trainer["PZONE_S3_ENDPOINT_URL"]  # DVC's endpointurl: the S3-compatible store, not AWS
    assert f"mc mb --ignore-existing pzone/{trainer['PZONE_S3_BUCKET']}" in " ".join(
        compose["services"]["s3-init"]["command"]
    )  # mc alias/bucket


def test_staged_uploads_expire_in_the_bucket(compose: dict[str, Any]) -> None:
    """s3-init adds the lifecycle rule (uploads/ expire after a day) once: not again when it finds it."""
    script = " ".join(compose["services"]["s3-init"]["command"])
    assert compose["services"]["s3-init"]["entrypoint"] == ["/bin/sh", "-c"]
    assert "mc ilm rule add --prefix uploads/ --expire-days 1 pzone/pzone" in script
    assert (
        script.index("mc mb") < script.index("mc ilm rule ls") < script.index("||") < script.index("rule add")
    )

"""The Lambda's database credentials from AWS Secrets Manager (``PZONE_DATABASE_SECRET_ARN``)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from pzone.db.engine import make_engine
from pzone.db.models import SensorReading
from tests.support.ingest import count, iot_event


@pytest.mark.integration
def test_lambda_reads_its_database_credentials_from_secrets_manager(
    pg_url: str, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PZONE_DATABASE_SECRET_ARN: the RDS-style JSON secret, read once over HTTP (moto's server), gives the URL."""
    import boto3
    from sqlalchemy.engine import make_url

    from pzone_ingest import handler as handler_module

    url = make_url(pg_url)
    client = boto3.client("secretsmanager", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    secret = {
        "engine": "postgres",
        "username": url.username or "postgres",
        "password": "p@ss/wörd:%",
        "host": url.host,
        "port": url.port or 5432,
        "dbname": url.database,
    }
    arn = client.create_secret(Name=f"pzone-db-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(secret))[
        "ARN"
    ]
    monkeypatch.delenv("PZONE_DATABASE_URL", raising=False)
    monkeypatch.setenv("PZONE_DATABASE_SECRET_ARN", arn)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    handler_module._runtime.cache_clear()
    try:
        assert handler_module.handler(iot_event("d-secret", 1), None)["inserted"] == 1
        engine, _ = handler_module._runtime()
        assert engine.url.password == "p@ss/wörd:%"  # quoted into the URL and back, unchanged
    finally:
        handler_module._runtime()[0].dispose()
        handler_module._runtime.cache_clear()
    check = make_engine(pg_url)
    try:
        assert count(check, SensorReading) == 1
    finally:
        check.dispose()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"username": "u", "host": "h"}', "lacks password"),
        ('{"username": "u", "password": "p", "host": "h", "engine": "mysql"}', "needs PostgreSQL"),
        ('{"username": "u", "password": "p", "host": "h", "port": "x"}', "port is not a number"),
        ('{"username": "u", "password": "p", "host": "h", "port": 70000}', "out of range"),
    ],
)
def test_a_bad_database_secret_is_refused_without_showing_it(secret: str, message: str) -> None:
    from pzone_ingest.secrets import SecretError, database_url_from_secret

    with pytest.raises(SecretError, match=message) as info:
        database_url_from_secret(secret)
    assert '"p"' not in str(info.value) and 'password": ' not in str(info.value)


@pytest.mark.unit
def test_an_unreadable_secret_names_the_secret_not_its_value() -> None:
    from pzone_ingest.secrets import SecretError, fetch_database_url

    class Refusing:
        def get_secret_value(self, SecretId: str) -> dict[str, str]:
            raise PermissionError("AccessDenied")

    with pytest.raises(SecretError, match="cannot read the database secret arn:x: PermissionError"):
        fetch_database_url("arn:x", Refusing())
    assert (
        database_url_from_secret_ok() == "postgresql+psycopg://a%40b:c%2Fd@db.internal:6543/pz?sslmode=prefer"
    )


def database_url_from_secret_ok() -> str:
    from pzone_ingest.secrets import database_url_from_secret

    return database_url_from_secret(
        json.dumps(
            {"username": "a@b", "password": "c/d", "host": "db.internal", "port": 6543, "dbname": "pz"}
        )
    )


@pytest.mark.integration
def test_the_status_rule_s_events_update_the_device(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The status rule adds ``kind``: a status event updates the device; an unknown kind is a dead letter."""
    from sqlalchemy import select

    from pzone.db.models import DeadLetter, Device
    from pzone_ingest import handler as handler_module

    monkeypatch.setenv("PZONE_DATABASE_URL", pg_url)
    handler_module._runtime.cache_clear()
    status = {
        "v": 1,
        "status": "offline",
        "zone_id": "zone-1",
        "topic_device_id": "d-status",
        "kind": "status",
        "received_at": 1_700_000_000_000,
    }
    try:
        assert handler_module.handler(iot_event("d-status", 1), None)["inserted"] == 1
        summary = handler_module.handler([status, {**status, "kind": "firmware"}], None)
        assert summary["statuses"] == 1 and summary["dead_letters"] == 1 and summary["inserted"] == 0
    finally:
        handler_module._runtime()[0].dispose()
        handler_module._runtime.cache_clear()
    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert (
                conn.execute(select(Device.status).where(Device.id == "d-status")).scalar_one() == "offline"
            )
        assert count(engine, DeadLetter) == 1
    finally:
        engine.dispose()

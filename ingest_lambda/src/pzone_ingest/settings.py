"""Settings of the ingest deployables (the Lambda and the MQTT worker), from ``PZONE_*`` environment variables."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr

from pzone.settings import CoreSettings

EMBEDDED_MQTT_PORT = 11883  # not 1883: a real broker may already hold the standard port


class Settings(CoreSettings):
    mqtt_url: SecretStr = Field(
        SecretStr(f"mqtt://127.0.0.1:{EMBEDDED_MQTT_PORT}"),
        description="mqtt://[user:password@]host:port or mqtts://... for TLS.",
    )
    mqtt_protocol: str = Field(
        "5", pattern=r"^(5|3\.1\.1)$", description="5, or 3.1.1 for brokers without v5."
    )
    ingest_client_id: str = Field(
        "pzone-ingest-0", description="Stable per worker: the persistent session's key."
    )
    ingest_shared_group: str | None = Field(
        "",
        description="Empty (the default): a plain subscription, which Mosquitto restores with the worker's persistent "
        "session through a broker restart, for one worker. A group name: an MQTT v5 shared subscription that several "
        "workers split; Mosquitto does not restore those, so a broker restart loses what arrives before the workers "
        "subscribe again (docs/architecture.md, 'Broker restarts').",
    )
    ingest_session_expiry_s: int = Field(7 * 24 * 3600, ge=0)
    ingest_batch_size: int = Field(5000, gt=0)
    ingest_batch_max_wait_ms: int = Field(200, gt=0)
    ingest_max_inflight: int = Field(20000, gt=0, le=65535, description="MQTT v5 Receive Maximum.")
    ingest_metrics_port: int = Field(9108, ge=0, description="Prometheus metrics port; 0 disables.")
    ingest_metrics_host: str = Field(
        "127.0.0.1", description="Metrics bind address (0.0.0.0 in a container)."
    )
    ingest_retry_max_s: float = Field(30.0, gt=0)
    ingest_stop_grace_s: float = Field(
        20.0, gt=0, description="After SIGTERM, exit even if the drain is stuck."
    )
    database_secret_arn: str | None = Field(
        None,
        description="AWS Secrets Manager secret (RDS JSON: username, password, host, port, dbname) read once at "
        "cold start when PZONE_DATABASE_URL is not set: the Lambda's database credentials never sit in its "
        "environment.",
    )


def mqtt_endpoint(url: str) -> tuple[str, int, bool, str | None, str | None]:
    """(host, port, tls, username, password) from an mqtt:// or mqtts:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"unsupported MQTT URL scheme {parts.scheme!r}; use mqtt:// or mqtts://")
    tls = parts.scheme in ("mqtts", "ssl")
    return (
        parts.hostname or "127.0.0.1",
        parts.port or (8883 if tls else 1883),
        tls,
        parts.username,
        parts.password,
    )

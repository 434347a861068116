"""Settings shared by every deployable, read from ``PZONE_*`` environment variables.

Each deployable subclasses :class:`CoreSettings` once (one ``Settings`` per deployable); the defaults are the
embedded ones (SQLite file and a local folder under ``PZONE_DATA_DIR``) so that nothing needs configuring to try it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pzone.tilt import FALLEN_MIN_DEG, UPRIGHT_MAX_DEG


class CoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PZONE_", extra="ignore")

    data_dir: Path = Field(
        Path(".pzone"), description="Folder for the embedded SQLite file and local objects."
    )
    database_url: SecretStr | None = Field(
        None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db; default: SQLite in data_dir.",
    )

    # Object store (photos). Credentials for S3 come from boto3's usual chain, never from these settings.
    s3_bucket: str | None = Field(
        None, description="S3 bucket for objects; default (unset): the local folder data_dir/objects."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint for S3-compatible stores (MinIO, moto); default: AWS."
    )
    s3_public_endpoint_url: str | None = Field(
        None,
        description="The S3 endpoint as browsers reach it, for presigned URLs, when the servers use an internal "
        "one (PZONE_S3_ENDPOINT_URL=http://s3:9000 in a cluster or compose); default: the same endpoint.",
    )
    s3_region: str | None = Field(
        None, description="S3 region; default: boto3's (AWS_REGION, ~/.aws/config)."
    )
    s3_max_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description="Tries per S3 call (botocore's standard retries, with backoff) before the store counts as "
        "unavailable and a request gets a 503.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Signing key for the local object store's URLs (16+ characters); "
        "default: generated once into data_dir/secret_key (mode 0600).",
    )

    # Log files (the console always gets the logs too). The `pzone` CLI reads PZONE_LOG_DIR itself (its global
    # --log-dir option), before any settings class is built; this field is the same variable for code that has
    # settings, e.g. the default source folder of `pzone logs backup`.
    log_dir: Path | None = Field(
        None,
        description="Folder for rotating log files <command>-<hostname>.log (rotated hourly and on exit to "
        "<name>.log.<YYYY-mm-dd_HH>, shipped to S3 by `pzone logs backup`); default (unset): console only.",
    )

    # Where ingest draws the tilt classes (degrees from vertical) for device state and alarms. Training reads its
    # own from params.yaml, so a deployment can move these without changing what a model learns.
    tilt_upright_max_deg: float = Field(UPRIGHT_MAX_DEG, gt=0, lt=90)
    tilt_fallen_min_deg: float = Field(FALLEN_MIN_DEG, gt=0, le=180)

    # Telemetry validation.
    max_payload_bytes: int = Field(4096, gt=0, description="Larger MQTT payloads are dead-lettered unparsed.")
    device_clock_future_tolerance_s: float = Field(
        120.0, ge=0, description="A device timestamp further ahead of the receive time is not trusted."
    )
    device_clock_past_tolerance_s: float = Field(
        7 * 24 * 3600.0, ge=0, description="A device timestamp older than this (buffer age) is not trusted."
    )
    device_seq_jump_floor: int = Field(
        10_000,
        ge=1,
        description="A reading may run this many sequence numbers ahead of its device's last applied one (plus "
        "PZONE_DEVICE_SEQ_JUMP_PER_S per second since it); a bigger jump is refused and alarmed.",
    )
    device_seq_jump_per_s: float = Field(
        10.0, ge=0, description="Sequence numbers a device may use per second (readings taken while offline)."
    )

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> CoreSettings:
        if self.tilt_upright_max_deg >= self.tilt_fallen_min_deg:
            raise ValueError("PZONE_TILT_UPRIGHT_MAX_DEG must be below PZONE_TILT_FALLEN_MIN_DEG")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'pzone.db').resolve()}"

"""Settings of the API deployable, from ``PZONE_*`` environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr

from pzone.settings import CoreSettings


class Settings(CoreSettings):
    redis_url: SecretStr | None = Field(
        None,
        description="Sessions, rate limits and the photo-processing queue in Redis when set, else in SQL "
        "(and photos processed in the API process).",
    )
    session_ttl_s: int = Field(7 * 24 * 3600, gt=0)
    cookie_secure: bool = Field(
        True, description="Secure flag on cookies; false only for plain-HTTP local runs."
    )
    login_max_attempts: int = Field(
        5,
        gt=0,
        description="Failed logins of one email from one client address (the limits are per window) ...",
    )
    login_max_per_email: int = Field(
        20,
        gt=0,
        description="... of one email from all addresses (a browser that signed in to the account before is exempt) ...",
    )
    login_max_per_address: int = Field(
        50,
        gt=0,
        description="... from one client address over all emails (the people behind a NAT share it) ...",
    )
    login_window_s: int = Field(300, gt=0, description="... within this many seconds, before 429.")
    signup_max_per_address: int = Field(10, gt=0, description="Sign-ups per client address ...")
    signup_window_s: int = Field(3600, gt=0, description="... within this many seconds, before 429.")
    password_hash_memory_mib: int = Field(
        256,
        gt=0,
        description="Memory the API may spend on password hashes at once (argon2id: 64 MiB each, so 4 at once by "
        "default); keep it well under the API container's memory limit (1 GiB in k8s/).",
    )
    upload_max_bytes: int = Field(20 * 1024 * 1024, gt=0)
    upload_url_expires_s: int = Field(600, gt=0, le=7 * 24 * 3600)
    upload_batch_max: int = Field(
        20, gt=0, le=100, description="Photos per batch upload (POST /api/photos/batch and its complete)."
    )
    image_max_pixels: int = Field(40_000_000, gt=0, description="Decompression-bomb guard.")
    image_max_side: int = Field(12_000, gt=0)
    model_tier_url: str | None = Field(None, description="Base URL of the model tier (POST /classify).")
    model_tier_timeout_s: float = Field(5.0, gt=0)
    verdict_retry_interval_s: float = Field(30.0, gt=0)

    # Photo processing (pzone_api.processing): the API enqueues, `pzone photos worker` processes.
    processing_immediate: bool | None = Field(
        None,
        description="Process photos inside the API process (huey's immediate mode); default: only when "
        "PZONE_REDIS_URL is unset, else a `pzone photos worker` takes them from the Redis queue.",
    )
    processing_queue_name: str = Field(
        "pzone-photos",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Name of the huey queue (its Redis keys: huey.redis.<name>, huey.r.<name>.*).",
    )
    processing_wait_s: float = Field(
        20.0, gt=0, description="How long `complete` waits for the worker before answering 202 processing."
    )
    processing_result_ttl_s: int = Field(
        3600, gt=0, description="How long a worker's outcome stays in Redis for a client asking again."
    )
    processing_lease_s: float = Field(
        300.0, gt=0, description="A photo worker holds a photo this long at most (longer than any one job)."
    )
    processing_stuck_after_s: float = Field(
        600.0,
        gt=0,
        description="A photo still processing this long after its job was enqueued, with no worker lease, lost its "
        "job (a crashed worker): the API's housekeeping enqueues it again.",
    )

    @property
    def processing_in_api(self) -> bool:
        """True when photos are processed in the API process (no queue)."""
        if self.processing_immediate is not None:
            return self.processing_immediate
        return self.redis_url is None

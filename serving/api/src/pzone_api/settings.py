"""Settings of the API deployable, from ``PZONE_*`` environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr

from pzone.settings import CoreSettings


class Settings(CoreSettings):
    redis_url: SecretStr | None = Field(
        None, description="Sessions and rate limits in Redis when set, else in SQL."
    )
    session_ttl_s: int = Field(7 * 24 * 3600, gt=0)
    cookie_secure: bool = Field(
        True, description="Secure flag on cookies; false only for plain-HTTP local runs."
    )
    login_max_attempts: int = Field(5, gt=0, description="Failed logins per email and per client address ...")
    login_window_s: int = Field(300, gt=0, description="... within this many seconds, before 429.")
    upload_max_bytes: int = Field(20 * 1024 * 1024, gt=0)
    upload_url_expires_s: int = Field(600, gt=0, le=7 * 24 * 3600)
    image_max_pixels: int = Field(40_000_000, gt=0, description="Decompression-bomb guard.")
    image_max_side: int = Field(12_000, gt=0)
    model_tier_url: str | None = Field(None, description="Base URL of the model tier (POST /classify).")
    model_tier_timeout_s: float = Field(5.0, gt=0)
    verdict_retry_interval_s: float = Field(30.0, gt=0)

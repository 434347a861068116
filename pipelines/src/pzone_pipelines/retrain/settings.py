"""Settings of `pzone retrain`: the trainer job's, plus when ``--auto`` retrains and where the model tier is."""

from __future__ import annotations

from pydantic import Field

from pzone_pipelines.settings import Settings


class RetrainSettings(Settings):
    """The trainer job's settings plus when ``--auto`` retrains and where the model tier is (also the demo's)."""

    retrain_min_new_labeled: int = Field(
        200,
        ge=1,
        description="--auto retrains once this many labeled photos arrived since the last training.",
    )
    retrain_min_live_accuracy: float = Field(
        0.8,
        ge=0,
        le=1,
        description="--auto retrains when the champion's live accuracy falls below this (and new photos exist).",
    )
    retrain_min_scored: int = Field(
        30, ge=1, description="Scored predictions the live accuracy needs before it can trigger a retrain."
    )
    retrain_rollout_timeout_s: float = Field(
        120.0, ge=0, description="How long retrain waits for the model tier to serve a promoted model."
    )
    model_tier_url: str | None = Field(
        None, description="Base URL of the model tier; unset: retrain does not wait for the rollout."
    )

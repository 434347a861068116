"""Settings of the model tier (``PZONE_*`` variables): which model it serves, its input limits, its CPU use."""

from __future__ import annotations

from pydantic import Field

from pzone.settings import CoreSettings

DEFAULT_MODEL_TAG = "pzone-tilt:latest"


class Settings(CoreSettings):
    model_tag: str = Field(
        DEFAULT_MODEL_TAG,
        description="BentoML model to serve; `name:latest` follows the package stage's newest import (the champion).",
    )
    model_watch_interval_s: float = Field(
        10.0,
        ge=0,
        description="How often the store is polled for a new champion (hot swap); 0 turns the watcher off.",
    )
    max_batch_images: int = Field(32, gt=0, description="Most images in one /classify request.")
    model_batch_images: int = Field(
        8,
        gt=0,
        le=64,
        description="Most images in one ONNX Runtime call of /classify's batcher (a larger request goes alone): on "
        "CPU, batches past ~8 cost more per image, not less (benchmarks/README.md).",
    )
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest single image accepted.")
    # Same variable as the API's guard: one limit for the whole platform.
    image_max_pixels: int = Field(40_000_000, gt=0, description="Decompression-bomb guard (width × height).")
    model_workers: int = Field(
        0,
        ge=0,
        description="Worker processes; 0: one per core of the container's CPU limit (cgroup, else affinity), at most 4.",
    )
    ort_threads: int = Field(
        0,
        ge=0,
        description="ONNX Runtime intra-op threads per worker; 0: the worker's share of the CPU limit (at least 1).",
    )
    model_trace_classify: bool = Field(
        False,
        description="Trace /classify with OpenTelemetry (BentoML's tracing config); off: its middleware costs "
        "~0.6 ms of CPU per request even when nothing is sampled.",
    )

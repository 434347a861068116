"""The demo's sizes and knobs (pure): how many photos per round, the fleet's behaviour, the demo's params, the table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

ZONE = "zone-demo"


@dataclass(frozen=True)
class Plan:
    rounds: int
    first_round_photos: int  # round 1 must hold enough of every class to train, validate and test
    photos_per_round: int
    devices: int
    epochs: int
    image_size: int
    photo_size: tuple[int, int]
    photo_interval_s: float  # between two photos: the photographing runs faster than real time


def make_plan(
    *, rounds: int, photos_per_round: int | None, devices: int, epochs: int | None, quick: bool
) -> Plan:
    per_round = photos_per_round or (80 if quick else 150)
    return Plan(
        rounds=rounds,
        first_round_photos=max(per_round, 150 if quick else 300),
        photos_per_round=per_round,
        devices=devices,
        epochs=epochs or (8 if quick else 20),
        image_size=64 if quick else 96,
        photo_size=(320, 240) if quick else (480, 360),
        photo_interval_s=0.12 if quick else 0.2,
    )


# The fleet's tilt behaviour: every state lasts tens of seconds on average, so that a photo's device rarely moves
# within the label window around it; all three classes common (upright ~40 %).
TILT_OPTIONS = {
    "fall_rate_per_h": 60.0,
    "lean_rate_per_h": 75.0,
    "mean_fallen_s": 45.0,
    "mean_leaning_s": 45.0,
}
READING_RATE_HZ = 2.0


def demo_params(plan: Plan) -> dict[str, Any]:
    """Overrides of the project's params.yaml for the demo's copy. The label window is short because the fleet
    changes state every few tens of seconds (the default 30 s window would see most photos' objects move); the
    first model's bar is low so that round 1 always has something to serve."""
    return {
        "labels": {"window_s": 3},
        "prepare": {"image_size": plan.image_size, "val_fraction": 0.15, "test_fraction": 0.2},
        "train": {"epochs": plan.epochs, "batch_size": 32},
        "register": {"margin": 0.01, "min_macro_f1": 0.0},
    }


@dataclass
class RoundResult:
    number: int
    photos: int = 0
    failed_uploads: int = 0
    labeled: int | None = None  # labeled photos in the round's training snapshot
    test_macro_f1: float | None = None
    outcome: str = "-"  # promoted | kept | no change | failed: <stage>
    champion: str | None = None  # the champion the round's pipeline recorded (its package stage)
    serving: str | None = None  # the champion after the round
    live_version: str | None = None  # the model that answered during the round
    live_accuracy: float | None = None
    live_macro_f1: float | None = None
    live_scored: int = 0
    seconds: float = 0.0


def results_table(results: list[RoundResult]) -> Table:
    from rich.table import Table

    table = Table(title="P-ZONE demo: rounds")
    for name in (
        "round",
        "photos",
        "labeled",
        "test macro-F1",
        "promoted?",
        "serving after",
        "live accuracy",
    ):
        table.add_column(name, justify="right" if name not in ("promoted?", "serving after") else "left")
    for r in results:
        if r.live_accuracy is not None:
            live = f"{r.live_accuracy:.3f} of {r.live_scored} ({r.live_version})"
        elif r.live_version:
            live = f"n/a: nothing scored ({r.live_version})"
        else:
            live = "n/a: no model yet"
        table.add_row(
            str(r.number),
            f"{r.photos}" + (f" ({r.failed_uploads} failed)" if r.failed_uploads else ""),
            "-" if r.labeled is None else str(r.labeled),
            "-" if r.test_macro_f1 is None else f"{r.test_macro_f1:.3f}",
            r.outcome,
            r.serving or "-",
            live,
        )
    return table

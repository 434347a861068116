"""The tilt classes and the angles that separate them: the one definition every tier reads.

A tilt is the angle between the object's up axis and the vertical, in degrees. Below ``UPRIGHT_MAX_DEG`` the object
stands, from ``FALLEN_MIN_DEG`` on it lies, in between it leans. Ingest classifies readings with these defaults
(``PZONE_TILT_*`` may move them for a deployment); training reads its thresholds from ``params.yaml``'s ``labels``
section, whose committed values are these; the classifier's label ids are the positions in :data:`TILT_CLASSES`.
"""

from __future__ import annotations

from enum import StrEnum

UPRIGHT_MAX_DEG = 20.0
FALLEN_MIN_DEG = 60.0


class TiltState(StrEnum):
    UPRIGHT = "upright"
    TILTED = "tilted"
    FALLEN = "fallen"


# The classifier's classes, in label-id order (labels.npy, model outputs, reports, the model tier's answers).
TILT_CLASSES: tuple[str, ...] = tuple(state.value for state in TiltState)


def classify_tilt(
    tilt_deg: float, upright_max_deg: float = UPRIGHT_MAX_DEG, fallen_min_deg: float = FALLEN_MIN_DEG
) -> TiltState:
    if tilt_deg < upright_max_deg:
        return TiltState.UPRIGHT
    if tilt_deg >= fallen_min_deg:
        return TiltState.FALLEN
    return TiltState.TILTED

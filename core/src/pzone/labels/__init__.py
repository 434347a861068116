"""Labels from telemetry: each stored photo gets the tilt class its device measured when the photo was taken.

* :mod:`.decision` — the pure decision (:func:`label_for`) and its parameters (:class:`LabelParams`);
* :mod:`.refresh` — :func:`sensor_labels`: the decision for every stored photo, fed from the database in batches
  (reads only); :func:`refresh_labels`: the same, upserted into ``photo_labels`` (platform work: `pzone retrain`,
  ``--auto``, `pzone dataset seed`);
* :mod:`.manual` — :func:`set_manual_label`: an operator's label wins over the sensor's and survives every refresh;
* :mod:`.rows` — which label of a row counts (:func:`effective_label`, :func:`measured_of`) and the sources;
* :mod:`.training_set` — :func:`labeled_photos`: the photos the training snapshot takes (with ``params``: the
  sensor's labels computed now, nothing written).

Nothing here commits: the caller owns the transaction.
"""

from pzone.labels.decision import (
    CLIENT_TIME_FUTURE_TOLERANCE_S,
    QUALITY_WEIGHTS,
    REASON_DISAGREE,
    REASON_NO_DEVICE,
    REASON_NO_READING,
    REASON_NO_TAKEN_AT,
    REASON_NOT_COMPUTED,
    REASON_OK,
    REASON_TIME_UNPROVEN,
    REASON_TOO_FEW,
    UNPROVEN_TIME_QUALITY,
    LabelDecision,
    LabelParams,
    ReadingPoint,
    as_utc,
    label_for,
    label_quality,
    reading_time,
    time_is_proven,
)
from pzone.labels.manual import set_manual_label
from pzone.labels.refresh import BATCH_SIZE, LabelStats, SensorLabel, refresh_labels, sensor_labels
from pzone.labels.rows import (
    MANUAL_QUALITY,
    SOURCE_MANUAL,
    SOURCE_SENSOR,
    LabelRow,
    Measured,
    effective_label,
    measured_of,
)
from pzone.labels.training_set import LabeledPhoto, labeled_photos

__all__ = [
    "BATCH_SIZE",
    "CLIENT_TIME_FUTURE_TOLERANCE_S",
    "MANUAL_QUALITY",
    "QUALITY_WEIGHTS",
    "REASON_DISAGREE",
    "REASON_NOT_COMPUTED",
    "REASON_NO_DEVICE",
    "REASON_NO_READING",
    "REASON_NO_TAKEN_AT",
    "REASON_OK",
    "REASON_TIME_UNPROVEN",
    "REASON_TOO_FEW",
    "SOURCE_MANUAL",
    "SOURCE_SENSOR",
    "UNPROVEN_TIME_QUALITY",
    "LabelDecision",
    "LabelParams",
    "LabelRow",
    "LabelStats",
    "LabeledPhoto",
    "Measured",
    "ReadingPoint",
    "SensorLabel",
    "as_utc",
    "effective_label",
    "label_for",
    "label_quality",
    "labeled_photos",
    "measured_of",
    "reading_time",
    "refresh_labels",
    "sensor_labels",
    "set_manual_label",
    "time_is_proven",
]

"""`pzone retrain`: the platform's labels refreshed, the training circle (`dvc repro`, which proposes) and the
promotion path (`pzone promote`) run once, exclusively, then the model tier's rollout.

* :mod:`.lock` — one retrain at a time, per machine and per database;
* :mod:`.refresh` — the label refresh, platform work (:func:`refresh_platform_labels`);
* :mod:`.pipeline` — the refresh, `dvc repro` and `pzone promote` as subprocesses, what they decided
  (:func:`retrain_once`);
* :mod:`.rollout` — which model version the tier serves, and the wait for a new one;
* :mod:`.auto` — what ``--auto`` decides on (:func:`should_retrain` is pure);
* :mod:`.command` — the command itself and its exit codes; :mod:`.settings` — its settings.

Heavy imports (dvc, httpx, Pillow) stay inside the functions.
"""

from pzone_pipelines.retrain.auto import (
    champion_live_accuracy,
    new_labeled_photos,
    should_retrain,
    snapshot_photo_ids,
)
from pzone_pipelines.retrain.command import EXIT_BUSY, EXIT_PIPELINE_FAILED, EXIT_ROLLOUT_TIMEOUT, command
from pzone_pipelines.retrain.lock import RetrainBusy, exclusive
from pzone_pipelines.retrain.pipeline import (
    Outcome,
    PipelineRun,
    expected_version,
    failed_stage,
    read_json,
    retrain_once,
    run_pipeline,
    run_promotion,
)
from pzone_pipelines.retrain.refresh import project_label_params, refresh_platform_labels
from pzone_pipelines.retrain.rollout import served_version, serving_workers, wait_for_version
from pzone_pipelines.retrain.settings import RetrainSettings

__all__ = [
    "EXIT_BUSY",
    "EXIT_PIPELINE_FAILED",
    "EXIT_ROLLOUT_TIMEOUT",
    "Outcome",
    "PipelineRun",
    "RetrainBusy",
    "RetrainSettings",
    "champion_live_accuracy",
    "command",
    "exclusive",
    "expected_version",
    "failed_stage",
    "new_labeled_photos",
    "project_label_params",
    "read_json",
    "refresh_platform_labels",
    "retrain_once",
    "run_pipeline",
    "run_promotion",
    "served_version",
    "serving_workers",
    "should_retrain",
    "snapshot_photo_ids",
    "wait_for_version",
]

"""MLflow wiring shared by the stages: one tracking store, one experiment, one registered model."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

# The registry's aliases: the model the tier serves, the newest registered one, and the one a promotion replaced.
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
PREVIOUS_CHAMPION_ALIAS = "previous-champion"

if TYPE_CHECKING:
    from pzone_pipelines.settings import Settings


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the configured store; create the experiment (with its artifact root) once. Returns its id."""
    # No phoning home: the platform runs offline, and usage telemetry is not ours to send.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    import mlflow

    if settings.tracking_uri.startswith("sqlite:///"):
        (settings.data_dir).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is not None:
        experiment_id = str(experiment.experiment_id)
    else:
        # A tracking server decides its own artifact root; a local store gets ours.
        location = (
            None if settings.tracking_uri.startswith(("http://", "https://")) else settings.artifact_root
        )
        experiment_id = str(mlflow.create_experiment(settings.mlflow_experiment, artifact_location=location))
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id

"""Settings of the trainer job (the `dvc repro` stages): the platform it reads, and where MLflow tracks."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field

from pzone.settings import CoreSettings


class Settings(CoreSettings):
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking server or store URI; default: SQLite at data_dir/mlflow.db (so `mlflow ui` works).",
    )
    mlflow_artifact_root: str | None = Field(
        None, description="Where a newly created experiment keeps artifacts; default: data_dir/mlartifacts."
    )
    mlflow_experiment: str = Field("pzone-tilt", description="MLflow experiment of the training runs.")
    mlflow_model_name: str = Field("pzone-tilt", description="Registered model that holds the champion.")
    dvc_remote_url: str | None = Field(
        None,
        description=(
            "DVC remote the platform's promotions push each model's dataset to (s3://<bucket>/dvc in a deployment, "
            "with PZONE_S3_ENDPOINT_URL for an S3-compatible store); default: the project's .dvc/config remote "
            "(the local folder .pzone/dvc-remote)."
        ),
    )

    def in_project(self, root: Path) -> Self:
        """These settings for commands run in the project at ``root``: the stages run there, so a relative data dir
        means the project's, for them and for the command alike."""
        if self.data_dir.is_absolute():
            return self
        return self.model_copy(update={"data_dir": root / self.data_dir})

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> str:
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        return (self.data_dir / "mlartifacts").resolve().as_uri()

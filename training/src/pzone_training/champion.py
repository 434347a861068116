"""A model's torch weights for packaging and promotion: which version holds ``@champion``, and a run's weights.

The weights come from ``models/model.pt`` when the run is the model just trained (the one in ``models/run.json``),
else from the ``checkpoint/model.pt`` artifact the train stage logs to every run (and packaging to a champion's run
trained before that), else from the logged pt2 graph.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from pzone_pipelines.tracking import CHAMPION_ALIAS
from pzone_training.tracking import CHECKPOINT_ARTIFACT

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Champion:
    name: str
    version: str
    run_id: str
    tags: dict[str, str]


def find_champion(client: Any, name: str) -> Champion | None:
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        return None
    return Champion(name, str(version.version), str(version.run_id or ""), dict(version.tags or {}))


def load_torch_champion(
    champion: Champion, run_record: Mapping[str, Any], checkpoint: Path, client: Any
) -> tuple[nn.Module, dict[str, Any], str]:
    """The champion's torch model, its checkpoint metadata and where it came from."""
    return load_torch_model(
        champion.run_id, f"models:/{champion.name}/{champion.version}", run_record, checkpoint, client
    )


def load_torch_model(
    run_id: str, model_uri: str, run_record: Mapping[str, Any], checkpoint: Path, client: Any
) -> tuple[nn.Module, dict[str, Any], str]:
    """A training run's torch model, its checkpoint metadata and where it came from: ``checkpoint`` when the run
    is the one in ``run_record`` (models/run.json), else the run's ``checkpoint/model.pt`` artifact, else the
    logged pt2 graph at ``model_uri`` (good for predictions; an ONNX export needs the checkpoint)."""
    from pzone_training.models import load_checkpoint

    if checkpoint.exists() and run_record.get("run_id") == run_id:
        model, meta = load_checkpoint(checkpoint)
        _keep_checkpoint(client, run_id, checkpoint)
        return model, meta, str(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = client.download_artifacts(run_id, CHECKPOINT_ARTIFACT, tmp)
            model, meta = load_checkpoint(Path(folder) / "model.pt")
            return model, meta, f"runs:/{run_id}/{CHECKPOINT_ARTIFACT}/model.pt"
        except Exception:  # no such artifact (MLflow raises its own errors, or OSError): fall back
            pass
    # Last resort: the logged pt2 graph (logits; metadata as the train stage logged it).
    import mlflow

    model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
    meta = dict(mlflow.models.get_model_info(model_uri).metadata or {})
    return model, meta, model_uri


def _keep_checkpoint(client: Any, run_id: str, checkpoint: Path) -> None:
    """Log model.pt to the run once (the train stage does it too), so a later rollback re-exports the exact
    weights."""
    try:
        if any(f.path.endswith("model.pt") for f in client.list_artifacts(run_id, CHECKPOINT_ARTIFACT)):
            return
        client.log_artifact(run_id, str(checkpoint), CHECKPOINT_ARTIFACT)
    except Exception as exc:  # best effort: packaging does not depend on it
        typer.echo(f"warning: could not keep {checkpoint} in run {run_id}: {exc}", err=True)

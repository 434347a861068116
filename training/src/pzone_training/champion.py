"""The registry's champion for packaging: which version holds ``@champion``, and its torch weights.

The weights come from ``models/model.pt`` when the champion is the model just trained (its run is the one in
``models/run.json``), else from the ``checkpoint/model.pt`` artifact the package stage logs to every champion's run,
else from the registry's pt2 graph.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from pzone_pipelines.tracking import CHAMPION_ALIAS

if TYPE_CHECKING:
    from torch import nn

CHECKPOINT_ARTIFACT = "checkpoint"  # artifact folder of a champion's run that holds its model.pt


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
    from pzone_training.models import load_checkpoint

    if checkpoint.exists() and run_record.get("run_id") == champion.run_id:
        model, meta = load_checkpoint(checkpoint)
        _keep_checkpoint(client, champion.run_id, checkpoint)
        return model, meta, str(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = client.download_artifacts(champion.run_id, CHECKPOINT_ARTIFACT, tmp)
            model, meta = load_checkpoint(Path(folder) / "model.pt")
            return model, meta, f"runs:/{champion.run_id}/{CHECKPOINT_ARTIFACT}/model.pt"
        except Exception:  # no such artifact (MLflow raises its own errors, or OSError): fall back
            pass
    # Last resort: the registry's pt2 graph (logits; metadata as the train stage logged it).
    import mlflow

    uri = f"models:/{champion.name}/{champion.version}"
    model = mlflow.pytorch.load_model(uri, map_location="cpu")
    meta = dict(mlflow.models.get_model_info(uri).metadata or {})
    return model, meta, uri


def _keep_checkpoint(client: Any, run_id: str, checkpoint: Path) -> None:
    """Log model.pt to the champion's run once, so a later rollback to it re-exports the exact weights."""
    try:
        if any(f.path.endswith("model.pt") for f in client.list_artifacts(run_id, CHECKPOINT_ARTIFACT)):
            return
        client.log_artifact(run_id, str(checkpoint), CHECKPOINT_ARTIFACT)
    except Exception as exc:  # best effort: packaging does not depend on it
        typer.echo(f"warning: could not keep {checkpoint} in run {run_id}: {exc}", err=True)

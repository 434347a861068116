"""MLflow wiring shared by train and evaluate: tracking URI, experiment, model logging, the champion, dataset hash.

Only ``PZONE_MLFLOW_*`` variables are read; nothing secret is logged.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

DEFAULT_TRACKING_URI = "sqlite:///.pzone/mlflow.db"
DEFAULT_EXPERIMENT = "pzone-tilt"
DEFAULT_MODEL_NAME = "pzone-tilt"
DEFAULT_ARTIFACT_DIR = ".pzone/mlartifacts"
CHAMPION_ALIAS = "champion"


def tracking_uri() -> str:
    return os.environ.get("PZONE_MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def experiment_name() -> str:
    return os.environ.get("PZONE_MLFLOW_EXPERIMENT", DEFAULT_EXPERIMENT)


def model_name() -> str:
    return os.environ.get("PZONE_MLFLOW_MODEL_NAME", DEFAULT_MODEL_NAME)


def _is_local(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def configure_mlflow() -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    import mlflow

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        # sqlite:///rel/path and sqlite:////abs/path: SQLite will not create the folder itself.
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    name = experiment_name()
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
        return str(experiment.experiment_id)
    location = os.environ.get("PZONE_MLFLOW_ARTIFACT_LOCATION")
    if location is None and _is_local(uri):
        # Without this a SQLite store puts artifacts in ./mlruns; a remote server chooses its own root.
        folder = Path(DEFAULT_ARTIFACT_DIR).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        location = folder.as_uri()
    experiment_id = str(mlflow.create_experiment(name, artifact_location=location))
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def dataset_hash(lock_path: Path | str = "dvc.lock", snapshot_dir: Path | str = "data/snapshot") -> str:
    """DVC's md5 of the snapshot (from dvc.lock), else sha256 of the snapshot's manifest, else ""."""
    import yaml

    lock_path, snapshot_dir = Path(lock_path), Path(snapshot_dir)
    if lock_path.exists():
        lock = yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}
        outs = ((lock.get("stages") or {}).get("snapshot") or {}).get("outs") or []
        for out in outs:
            if isinstance(out, dict) and str(out.get("path", "")).rstrip(
                "/"
            ) == snapshot_dir.as_posix().rstrip("/"):
                md5 = out.get("md5")
                if md5:
                    return str(md5)
    manifest = snapshot_dir / "manifest.json"
    if manifest.exists():
        return "sha256:" + hashlib.sha256(manifest.read_bytes()).hexdigest()
    return ""


def log_pytorch_model(model: nn.Module, image_size: int, metadata: dict[str, Any]) -> str:
    """Log the model in MLflow's pt2 format (torch.export: a graph, no pickle, no pzone code needed to load it).

    Input: normalized float32 (N, 3, S, S); output: logits. Returns the model URI.
    """
    import mlflow
    from mlflow.models import infer_signature

    model = model.cpu().eval()
    # Batch of 2: torch.export specializes a size-1 dimension, and the batch must stay dynamic.
    example = np.zeros((2, 3, image_size, image_size), dtype=np.float32)
    with torch.inference_mode():
        output = model(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, output)
    info = mlflow.pytorch.log_model(
        model,
        name="model",
        input_example=example,
        signature=signature,
        serialization_format="pt2",
        metadata=metadata,
        # Explicit requirements: inferring them re-loads the model in a subprocess (slow on a small CPU).
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
    )
    return str(info.model_uri)


def load_champion() -> tuple[nn.Module, dict[str, Any]] | None:
    """The registry's ``<model name>@champion`` with its metadata (arch, image_size, …), or None if there is none."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name = model_name()
    try:
        version = MlflowClient().get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        return None
    uri = f"models:/{name}@{CHAMPION_ALIAS}"
    model = mlflow.pytorch.load_model(uri, map_location="cpu")
    metadata = dict(mlflow.models.get_model_info(uri).metadata or {})
    metadata.update(model_uri=uri, version=str(version.version), run_id=version.run_id)
    return model, metadata

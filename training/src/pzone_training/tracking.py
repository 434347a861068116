"""MLflow for train and evaluate: the dataset hash, model logging and the champion to compare with.

The tracking store and experiment are set by ``pzone_pipelines.tracking.configure_mlflow``; nothing secret is logged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pzone_pipelines.tracking import CHAMPION_ALIAS


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


def load_champion(name: str) -> tuple[nn.Module, dict[str, Any]] | None:
    """The registry's ``<name>@champion`` with its metadata (arch, image_size, …), or None if there is none."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        version = MlflowClient().get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException:
        return None
    uri = f"models:/{name}@{CHAMPION_ALIAS}"
    model = mlflow.pytorch.load_model(uri, map_location="cpu")
    metadata = dict(mlflow.models.get_model_info(uri).metadata or {})
    metadata.update(model_uri=uri, version=str(version.version), run_id=version.run_id)
    return model, metadata

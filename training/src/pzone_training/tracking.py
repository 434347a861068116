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

CHECKPOINT_ARTIFACT = "checkpoint"  # artifact folder of a training run that holds its models/model.pt


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


def log_lineage(root: Path, prepared_dir: Path, digest: str, remote_url: str | None) -> None:
    """Into the active run: the data and code it trains from (:mod:`pzone_pipelines.dataset_record`): the lineage
    artifacts, the digest and code tags, and the snapshot as an MLflow dataset input."""
    import tempfile
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from pzone_pipelines import dataset_record as record

    commit, dirty = record.code_commit(root)
    tags = {record.DATASET_DIGEST_TAG: digest, record.CODE_COMMIT_TAG: commit}
    if dirty is not None:
        tags[record.CODE_DIRTY_TAG] = str(dirty).lower()
    mlflow.set_tags(tags)
    manifest_path = root / "data" / "snapshot" / "manifest.json"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / record.LINEAGE_ARTIFACT
        record.write_lineage(folder, root, manifest_path, prepared_dir)
        mlflow.log_artifacts(str(folder), artifact_path=record.LINEAGE_ARTIFACT)
    if not manifest_path.is_file():
        return
    manifest = record.read_manifest(manifest_path)
    where = record.snapshot_source(remote_url or str((root / record.LOCAL_REMOTE).resolve()), digest)
    with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways", all of them local
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(where)
    # MetaDataset implements profile (None); its stubs leave it abstract.
    dataset = MetaDataset(  # type: ignore[abstract]
        source=source, name=record.DATASET_NAME, digest=digest.removesuffix(".dir")[:36]
    )
    mlflow.log_input(dataset, context=record.DATASET_CONTEXT, tags=record.dataset_input_tags(manifest))


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

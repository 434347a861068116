"""Stage ``train``: fit the tilt classifier on data/prepared/train, pick it on val, track it in MLflow.

Writes models/model.pt, models/run.json and reports/train_history.csv.
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pzone.tilt import TILT_CLASSES
from pzone_pipelines.params import load_params
from pzone_training.augment import MEAN, STD, eval_transforms, torchvision_train_transforms, train_transforms
from pzone_training.data import class_weights, load_split
from pzone_training.metrics import accuracy, macro_f1
from pzone_training.models import build_model, predict, save_checkpoint
from pzone_training.params import (
    AugmentParams,
    TrainParams,
    coerce_train_params,
    flatten,
    train_params_dict,
)

HISTORY_FIELDS = ("epoch", "train_loss", "val_accuracy", "val_macro_f1")
EpochCallback = Callable[[dict[str, float]], None]


WARMUP_FRACTION = 0.2  # of one-cycle's steps: the learning rate rises, then anneals over the rest


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TiltDataset(Dataset[tuple[torch.Tensor, int]]):
    def __init__(
        self, images: np.ndarray, labels: np.ndarray, transform: Callable[[np.ndarray], torch.Tensor]
    ):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    train: bool,
    aug_params: AugmentParams | None = None,
    seed: int | None = None,
    backend: Literal["albumentations", "torchvision"] = "albumentations",
) -> TiltDataset:
    """Training set (augmented) or evaluation set (normalized only) over uint8 (N, S, S, 3) images."""
    if train and backend == "torchvision":
        return TiltDataset(images, labels, torchvision_train_transforms(aug_params or AugmentParams()))
    compose = train_transforms(aug_params or AugmentParams(), seed) if train else eval_transforms()

    def apply(image: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(compose(image=image)["image"])

    return TiltDataset(images, labels, apply)


def make_loader(
    dataset: TiltDataset, batch_size: int, shuffle: bool, seed: int = 42, num_workers: int = 0
) -> DataLoader[tuple[torch.Tensor, int]]:
    """In-process loading by default: with two cores, worker processes only steal time from the model."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        # A last batch of 1 breaks BatchNorm's batch statistics.
        drop_last=shuffle and len(dataset) > batch_size,
        num_workers=num_workers,
        generator=generator,
    )


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        disable=not enabled,
        console=Console(stderr=True),
    )


def warmup_fraction(total_steps: int, wanted: float = WARMUP_FRACTION) -> float:
    """The share of one-cycle's steps spent warming up. OneCycleLR divides by the warm-up's length in steps minus
    one, so a warm-up of exactly one step (five steps in all, at 20 %: one batch an epoch for five epochs) would
    divide by zero: it gets a step and a half instead."""
    return wanted if wanted * total_steps != 1.0 else 1.5 / total_steps


def train_model(
    train_split: Sequence[Any],
    val_split: Sequence[Any] | None,
    params: TrainParams | Mapping[str, Any],
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train from (images, labels[, ids]) splits; returns the model (eval mode) and one history row per epoch.

    The weights kept are those of the epoch with the best val macro-F1 (the last epoch if val is empty).
    """
    p = coerce_train_params(params)
    train_images, train_labels = train_split[0], np.asarray(train_split[1], dtype=np.int64)
    if len(train_images) == 0:
        raise ValueError("the train split is empty")
    val_images = val_split[0] if val_split is not None else np.zeros((0, 1, 1, 3), np.uint8)
    val_labels = np.asarray(val_split[1], dtype=np.int64) if val_split is not None else np.zeros(0, np.int64)
    weights = torch.from_numpy(class_weights(train_labels, len(TILT_CLASSES), p.class_weight_power))

    if p.num_threads > 0:
        torch.set_num_threads(p.num_threads)
    seed_everything(p.seed)
    model = build_model(p.arch, len(TILT_CLASSES), p.weights_path or None)
    dataset = make_dataset(train_images, train_labels, train=True, aug_params=p.augment, seed=p.seed)
    loader = make_loader(dataset, p.batch_size, shuffle=True, seed=p.seed)
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=p.label_smoothing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    # One-cycle: warm-up then annealing reaches a good optimum in few epochs, which is what a CPU budget allows.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=p.lr,
        epochs=p.epochs,
        steps_per_epoch=len(loader),
        pct_start=warmup_fraction(p.epochs * len(loader)),
    )

    history: list[dict[str, float]] = []
    best_f1, best_state = -1.0, None
    with _progress(progress) as bars:
        epochs_task = bars.add_task("epochs", total=p.epochs, info="")
        for epoch in range(1, p.epochs + 1):
            model.train()
            batch_task = bars.add_task(f"epoch {epoch}", total=len(loader), info="", transient=True)
            total, seen = 0.0, 0
            for images, labels in loader:
                optimizer.zero_grad(set_to_none=True)
                loss = criterion(model(images), labels)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item() * len(labels)
                seen += len(labels)
                bars.update(batch_task, advance=1, info=f"loss {total / seen:.4f}")
            bars.remove_task(batch_task)
            row = {
                "epoch": float(epoch),
                "train_loss": total / max(seen, 1),
                **_val_metrics(model, val_images, val_labels),
            }
            history.append(row)
            if on_epoch is not None:
                on_epoch(row)
            bars.update(
                epochs_task,
                advance=1,
                info=f"loss {row['train_loss']:.4f} val acc {row['val_accuracy']:.3f} F1 {row['val_macro_f1']:.3f}",
            )
            if len(val_labels) and row["val_macro_f1"] > best_f1:
                best_f1 = row["val_macro_f1"]
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history


def _val_metrics(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    if len(labels) == 0:
        # No val split: the metrics are undefined, not zero (NaN also keeps dvc plots honest).
        return {"val_accuracy": float("nan"), "val_macro_f1": float("nan")}
    predicted = predict(model, images, batch_size=128, flip_tta=False).argmax(axis=1)
    model.train()
    return {
        "val_accuracy": accuracy(labels, predicted),
        "val_macro_f1": macro_f1(labels, predicted, len(TILT_CLASSES)),
    }


def write_history(path: Path | str, history: Sequence[Mapping[str, float]]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: int(row[k]) if k == "epoch" else row[k] for k in HISTORY_FIELDS})


def checkpoint_meta(p: TrainParams, image_size: int) -> dict[str, Any]:
    return {
        "arch": p.arch,
        "classes": list(TILT_CLASSES),
        "image_size": int(image_size),
        "mean": list(MEAN),
        "std": list(STD),
        "params": flatten({"train": train_params_dict(p)}),
    }


def run_stage(
    params: Mapping[str, Any],
    prepared_dir: Path,
    model_path: Path,
    run_path: Path,
    history_path: Path,
    track: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """The whole stage; returns models/run.json's content (empty when tracking is off)."""
    p = TrainParams.from_params(params)
    train_split = load_split(prepared_dir / "train")
    if p.shuffle_labels:
        shuffled = np.random.default_rng(p.seed).permutation(train_split.labels)
        train_split = train_split._replace(labels=shuffled)
    val_dir = prepared_dir / "val"
    val_split = load_split(val_dir) if (val_dir / "images.npy").exists() else None
    if len(train_split.labels) == 0:
        raise ValueError(f"{prepared_dir / 'train'} is empty: nothing to train on")
    image_size = int(train_split.images.shape[1])
    meta = checkpoint_meta(p, image_size)

    if not track:
        model, history = train_model(train_split, val_split, p, progress=progress)
        save_checkpoint(model_path, model, meta)
        write_history(history_path, history)
        return {}

    import mlflow

    from pzone_pipelines.settings import Settings
    from pzone_pipelines.tracking import configure_mlflow
    from pzone_training import tracking

    settings = Settings()
    experiment_id = configure_mlflow(settings)
    data_hash = tracking.dataset_hash()
    logged = {
        **flatten({"train": train_params_dict(p)}),
        **flatten({"prepare": params.get("prepare") or {}}),
        "seed": p.seed,
        "n_train": len(train_split.labels),
        "n_val": len(val_split.labels) if val_split is not None else 0,
    }
    with mlflow.start_run(tags={"dataset_hash": data_hash, "stage": "train"}) as run:
        mlflow.log_params(logged)

        def log_epoch(row: dict[str, float]) -> None:
            values = {k: v for k, v in row.items() if k != "epoch" and np.isfinite(v)}
            mlflow.log_metrics(values, step=int(row["epoch"]))

        started = time.perf_counter()
        model, history = train_model(train_split, val_split, p, progress=progress, on_epoch=log_epoch)
        train_seconds = time.perf_counter() - started
        mlflow.log_metric("train_seconds", train_seconds)
        save_checkpoint(model_path, model, meta)
        write_history(history_path, history)
        model_uri = tracking.log_pytorch_model(
            model, image_size, {k: v for k, v in meta.items() if k != "params"} | {"dataset_hash": data_hash}
        )
        mlflow.log_artifact(str(history_path))
        # The exact weights, so that `pzone promote` can export any run's model to ONNX (a pt2 graph cannot be).
        mlflow.log_artifact(str(model_path), artifact_path=tracking.CHECKPOINT_ARTIFACT)
        tracking.log_lineage(Path.cwd(), prepared_dir, data_hash, settings.dvc_remote_url)
        info = {
            "run_id": run.info.run_id,
            "model_uri": model_uri,
            "experiment_id": experiment_id,
            "dataset_hash": data_hash,
            "train_seconds": round(train_seconds, 2),
            # epochs × train images / time: the stage's throughput, validation passes included
            "train_images_per_s": round(p.epochs * len(train_split.labels) / train_seconds, 1),
        }
    run_path.parent.mkdir(parents=True, exist_ok=True)
    run_path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def main(
    params_file: Annotated[
        Path, typer.Option(help="params.yaml to read (base, prepare, train sections)")
    ] = Path("params.yaml"),
    prepared_dir: Annotated[
        Path, typer.Option(help="folder with the prepared train/ and val/ splits")
    ] = Path("data/prepared"),
    model_path: Annotated[Path, typer.Option(help="checkpoint to write")] = Path("models/model.pt"),
    run_path: Annotated[Path, typer.Option(help="where to write the MLflow run id and model URI")] = Path(
        "models/run.json"
    ),
    history_path: Annotated[Path, typer.Option(help="per-epoch CSV for dvc plots")] = Path(
        "reports/train_history.csv"
    ),
    track: Annotated[bool, typer.Option(help="track the run in MLflow (PZONE_MLFLOW_* variables)")] = True,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Train the tilt classifier."""
    started = time.perf_counter()
    info = run_stage(
        load_params(params_file), prepared_dir, model_path, run_path, history_path, track, progress
    )
    Console(stderr=True).print(
        f"trained in {time.perf_counter() - started:.1f} s → {model_path}"
        + (f" (MLflow run {info['run_id']})" if info else "")
    )


if __name__ == "__main__":
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # MLflow probes git; a missing git binary is fine.
    from pzone.cli.common import run_command

    run_command(main)

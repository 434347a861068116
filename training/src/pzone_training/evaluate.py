"""Stage ``evaluate``: score models/model.pt and the registry's champion on the same test split.

Writes reports/metrics.json, reports/champion_metrics.json, reports/confusion.csv (one row per test image, for the
dvc plots confusion template), reports/confusion.png and reports/curves.png; logs them to the train run.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

from pzone.tilt import TILT_CLASSES
from pzone_pipelines.params import load_params
from pzone_training.data import load_split, resize_square
from pzone_training.metrics import classification_report, confusion_matrix


def evaluate_predictions(labels: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    return classification_report(labels, predicted, classes)


def write_confusion_csv(
    path: Path, labels: np.ndarray, predicted: np.ndarray, classes: Sequence[str]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        writer.writerows((classes[int(a)], classes[int(p)]) for a, p in zip(labels, predicted, strict=True))


def plot_confusion(path: Path, labels: np.ndarray, predicted: np.ndarray, classes: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on a CI runner or in a container
    import matplotlib.pyplot as plt

    from pzone_pipelines.plots import draw_confusion

    cm = confusion_matrix(labels, predicted, len(classes))
    fig, ax = plt.subplots(figsize=(4.5, 4))
    draw_confusion(ax, cm, classes, "test confusion")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_history(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def plot_curves(path: Path, history: Sequence[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [row["train_loss"] for row in history], marker="o")
    left.set_xlabel("epoch")
    left.set_ylabel("train loss")
    right.plot(epochs, [row["val_accuracy"] for row in history], marker="o", label="val accuracy")
    right.plot(epochs, [row["val_macro_f1"] for row in history], marker="o", label="val macro-F1")
    right.set_xlabel("epoch")
    right.set_ylim(0, 1.02)
    right.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def model_report(
    model: Any, meta: dict[str, Any], images: np.ndarray, labels: np.ndarray, batch_size: int
) -> dict[str, Any]:
    """A model's metrics on a test split (resized to its input size), as the evaluate stage computes them:
    ``{"comparable": false, "classes": …}`` for a model with another label set, which this split cannot score."""
    from pzone_training.models import predict

    classes = list(meta.get("classes") or TILT_CLASSES)
    if classes != list(TILT_CLASSES):
        return {"comparable": False, "classes": classes}
    size = int(meta.get("image_size") or images.shape[1])
    predicted = predict(model, resize_square(images, size), batch_size).argmax(axis=1)
    return {"comparable": True, **classification_report(labels, predicted, classes)}


def champion_report(
    images: np.ndarray, labels: np.ndarray, batch_size: int, model_name: str
) -> dict[str, Any]:
    """The same metrics for the registry's champion of ``model_name``, or ``{"exists": false}``."""
    from pzone_training import tracking

    champion = tracking.load_champion(model_name)
    if champion is None:
        return {"exists": False}
    model, meta = champion
    return {"exists": True, **_champion_ids(meta), **model_report(model, meta, images, labels, batch_size)}


def _champion_ids(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta.get(k) for k in ("model_uri", "version", "run_id", "dataset_hash", "arch", "image_size")}


def run_stage(
    params: dict[str, Any],
    model_path: Path,
    test_dir: Path,
    reports_dir: Path,
    run_path: Path,
    track: bool = True,
) -> dict[str, Any]:
    from pzone_training.models import load_checkpoint, predict

    batch_size = int((params.get("evaluate") or {}).get("batch_size", 128))
    test = load_split(test_dir)
    if len(test.labels) == 0:
        raise ValueError(f"{test_dir} is empty: nothing to evaluate on")
    model, meta = load_checkpoint(model_path)
    classes = list(meta["classes"])
    predicted = predict(model, resize_square(test.images, int(meta["image_size"])), batch_size).argmax(axis=1)
    metrics = evaluate_predictions(test.labels, predicted, classes)

    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_confusion_csv(reports_dir / "confusion.csv", test.labels, predicted, classes)
    plot_confusion(reports_dir / "confusion.png", test.labels, predicted, classes)
    plot_curves(reports_dir / "curves.png", read_history(reports_dir / "train_history.csv"))

    champion: dict[str, Any] = {"exists": False}
    if track:
        import mlflow

        from pzone_pipelines.settings import Settings
        from pzone_pipelines.tracking import configure_mlflow

        settings = Settings()
        configure_mlflow(settings)
        champion = champion_report(test.images, test.labels, batch_size, settings.mlflow_model_name)
        run_id = json.loads(run_path.read_text(encoding="utf-8"))["run_id"] if run_path.exists() else None
        if run_id:
            with mlflow.start_run(run_id=run_id):
                flat = {"test_accuracy": metrics["accuracy"], "test_macro_f1": metrics["macro_f1"]}
                flat |= {f"test_f1_{name}": m["f1"] for name, m in metrics["per_class"].items()}
                mlflow.log_metrics(flat)
                for name in ("metrics.json", "confusion.csv", "confusion.png", "curves.png"):
                    mlflow.log_artifact(str(reports_dir / name), artifact_path="reports")
        else:
            Console(stderr=True).print(f"[yellow]{run_path} missing: metrics not logged to MLflow[/yellow]")
    (reports_dir / "champion_metrics.json").write_text(
        json.dumps(champion, indent=2) + "\n", encoding="utf-8"
    )
    return metrics


def main(
    params_file: Annotated[Path, typer.Option(help="params.yaml to read (evaluate section)")] = Path(
        "params.yaml"
    ),
    model_path: Annotated[Path, typer.Option(help="checkpoint written by the train stage")] = Path(
        "models/model.pt"
    ),
    test_dir: Annotated[Path, typer.Option(help="prepared test split")] = Path("data/prepared/test"),
    reports_dir: Annotated[Path, typer.Option(help="where the reports go")] = Path("reports"),
    run_path: Annotated[Path, typer.Option(help="the train stage's MLflow run")] = Path("models/run.json"),
    track: Annotated[bool, typer.Option(help="log to MLflow and score the registry's champion")] = True,
) -> None:
    """Evaluate the trained model (and the current champion) on the test split."""
    metrics = run_stage(load_params(params_file), model_path, test_dir, reports_dir, run_path, track)
    Console(stderr=True).print(
        f"test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} (n={metrics['n_test']})"
    )


if __name__ == "__main__":
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    from pzone.cli.common import run_command

    run_command(main)

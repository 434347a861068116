"""``pzone compare``: a registered model's recorded test metrics beside the workspace's, in one table and one PNG.

The model's numbers are what the evaluate stage logged to its training run (``reports/metrics.json`` and
``reports/confusion.csv`` among the run's artifacts); the workspace's are the same files of the last ``dvc repro``
or ``dvc exp run`` here. The table holds accuracy, macro-F1, each class's F1 and the test count with the
workspace's deltas; ``reports/compare.png`` shows both confusion matrices side by side. Both sides come from their
own test split: the same numbers mean the same model only when the splits match (`pzone dataset pull` restores the
model's).
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from pzone.errors import UserError
from pzone.tilt import TILT_CLASSES
from pzone_pipelines.plots import draw_confusion

REPORTS_ARTIFACT = "reports"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion.csv"
PLOT = Path("reports/compare.png")


class CompareError(UserError):
    """One side of the comparison has no metrics to show."""


@dataclass(frozen=True)
class Row:
    name: str
    recorded: float | None
    workspace: float | None

    @property
    def delta(self) -> float | None:
        if self.recorded is None or self.workspace is None:
            return None
        return self.workspace - self.recorded


def metric_rows(recorded: Mapping[str, Any], workspace: Mapping[str, Any]) -> list[Row]:
    """Accuracy, macro-F1, F1 per class (the union of both sides' classes, tilt classes first) and n."""

    def f1(metrics: Mapping[str, Any], name: str) -> float | None:
        entry = (metrics.get("per_class") or {}).get(name)
        return float(entry["f1"]) if isinstance(entry, Mapping) and "f1" in entry else None

    def value(metrics: Mapping[str, Any], key: str) -> float | None:
        found = metrics.get(key)
        return float(found) if isinstance(found, int | float) else None

    rows = [
        Row("accuracy", value(recorded, "accuracy"), value(workspace, "accuracy")),
        Row("macro-F1", value(recorded, "macro_f1"), value(workspace, "macro_f1")),
    ]
    names = [*(recorded.get("per_class") or {}), *(workspace.get("per_class") or {})]
    classes = [c for c in TILT_CLASSES if c in names] + sorted(set(names) - set(TILT_CLASSES))
    rows += [Row(f"F1 {name}", f1(recorded, name), f1(workspace, name)) for name in classes]
    rows.append(Row("n (test)", value(recorded, "n_test"), value(workspace, "n_test")))
    return rows


def format_value(value: float | None, count: bool, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if count:
        return f"{value:+.0f}" if signed else f"{value:.0f}"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def table_lines(rows: Sequence[Row], recorded_label: str) -> list[list[str]]:
    """The table's cells: a header, then one line per row."""
    lines = [["metric", recorded_label, "workspace", "Δ"]]
    for row in rows:
        count = row.name.startswith("n ")
        lines.append(
            [
                row.name,
                format_value(row.recorded, count),
                format_value(row.workspace, count),
                format_value(row.delta, count, signed=True),
            ]
        )
    return lines


def read_confusion(path: Path, classes: Sequence[str] = TILT_CLASSES) -> np.ndarray:
    """The evaluate stage's ``confusion.csv`` (one row per test image: actual, predicted) as counts
    ``[actual, predicted]``."""
    index = {name: i for i, name in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("actual") in index and row.get("predicted") in index:
                matrix[index[row["actual"]], index[row["predicted"]]] += 1
    return matrix


def plot_side_by_side(
    path: Path, matrices: Sequence[tuple[str, np.ndarray | None]], classes: Sequence[str] = TILT_CLASSES
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display in a container or on CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(matrices), figsize=(4.5 * len(matrices), 4), squeeze=False)
    for ax, (title, cm) in zip(axes[0], matrices, strict=True):
        if cm is None:
            ax.text(0.5, 0.5, "no confusion recorded", ha="center", va="center")
            ax.set_axis_off()
            ax.set_title(title)
            continue
        draw_confusion(ax, cm, classes, title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def recorded_reports(client: Any, run_id: str, dst: Path) -> tuple[dict[str, Any], Path | None]:
    """The run's recorded test metrics and its confusion CSV (None when not logged). Without the evaluate stage's
    ``metrics.json`` artifact, the run's ``test_*`` metrics stand in (no per-class support, no n)."""
    from mlflow.exceptions import MlflowException

    try:
        folder = Path(client.download_artifacts(run_id, REPORTS_ARTIFACT, str(dst)))
    except (MlflowException, OSError):
        folder = dst / REPORTS_ARTIFACT
    confusion = folder / CONFUSION_FILE
    if (folder / METRICS_FILE).is_file():
        return json.loads(
            (folder / METRICS_FILE).read_text("utf-8")
        ), confusion if confusion.is_file() else None
    logged = dict(client.get_run(run_id).data.metrics)
    if "test_macro_f1" not in logged:
        raise CompareError(f"the MLflow run {run_id} logged no test metrics: its evaluate stage did not run")
    per_class = {
        name.removeprefix("test_f1_"): {"f1": value}
        for name, value in logged.items()
        if name.startswith("test_f1_")
    }
    metrics = {
        "accuracy": logged.get("test_accuracy"),
        "macro_f1": logged["test_macro_f1"],
        "per_class": per_class,
    }
    return metrics, confusion if confusion.is_file() else None


def command(
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="The model: NAME@ALIAS, NAME/VERSION or a run id; default: the champion."
        ),
    ] = None,
    project: Annotated[
        Path, typer.Option(help="The project whose reports/ to compare (after `dvc repro`); default: here.")
    ] = Path("."),
) -> None:
    """The model's recorded test metrics beside the workspace's reports/metrics.json (accuracy, macro-F1, per-class
    F1, n, with deltas), and both confusion matrices side by side in reports/compare.png."""
    from rich.markup import escape
    from rich.table import Table

    from pzone.cli.common import console, fail, settings_or_fail
    from pzone_pipelines.dataset_pull import PullInputError, model_ref, resolve_source, sentence
    from pzone_pipelines.lineage.record import LineageError, open_client
    from pzone_pipelines.settings import Settings
    from pzone_pipelines.tracking import CHAMPION_ALIAS

    root = project.resolve()
    workspace_metrics = root / "reports" / METRICS_FILE
    if not workspace_metrics.is_file():
        raise fail(
            f"no {escape(str(workspace_metrics))}: run `dvc repro` (or `dvc exp run`) in the project first"
        )
    settings = settings_or_fail(Settings).in_project(root)
    try:
        client = open_client(settings.tracking_uri)
        ref = model_ref(
            settings.mlflow_model_name, model or f"{settings.mlflow_model_name}@{CHAMPION_ALIAS}", None, None
        )
        source = resolve_source(client, ref)
    except (PullInputError, LineageError) as exc:
        raise fail(escape(sentence(exc))) from None
    workspace = json.loads(workspace_metrics.read_text("utf-8"))
    with tempfile.TemporaryDirectory(prefix="pzone-compare-") as tmp:
        recorded, confusion = recorded_reports(client, source.run_id, Path(tmp))
        recorded_cm = read_confusion(confusion) if confusion is not None else None
    label = source.label.split(" (")[0]
    lines = table_lines(metric_rows(recorded, workspace), label)
    table = Table(title=f"test metrics of {source.label}, as recorded, and of the workspace")
    for i, header in enumerate(lines[0]):
        table.add_column(header, justify="left" if i == 0 else "right")
    for line in lines[1:]:
        table.add_row(*line)
    console.print(table)
    workspace_csv = root / "reports" / CONFUSION_FILE
    workspace_cm = read_confusion(workspace_csv) if workspace_csv.is_file() else None
    plot_side_by_side(root / PLOT, [(label, recorded_cm), ("workspace", workspace_cm)])
    console.print(f"confusion matrices side by side: {escape(str(root / PLOT))}", soft_wrap=True)

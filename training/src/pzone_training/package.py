"""Packaging: the registry's champion → ONNX → the BentoML model store → a Bento of the model tier (the last step
of ``pzone promote``; ``python -m pzone_training.package`` packages the current champion again by hand).

1. Find ``<model name>@champion`` in MLflow and its torch weights (:mod:`pzone_training.champion`).
2. Export it to the model tier's ONNX graph and check parity on the test split, ONNX Runtime against torch
   (:mod:`pzone_training.onnx_export`). A failure imports nothing.
3. Import it as ``pzone-tilt`` into BentoML's store (``$BENTOML_HOME``, else BentoML's default ``~/bentoml``: the
   store that ``bentoml serve`` at the repository root reads), labelled with its MLflow version, and build the
   Bento from ``bentofile.yaml`` at the project root, as ``bentoml build`` does (:mod:`pzone_training.bento`).
   Both are reused when the champion (and the serving code) did not change.

Writes ``reports/package.json``; a failure is a :class:`PackageError` (a sentence).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pzone.errors import UserError
from pzone_training.bento import (
    BentoError,
    Imported,
    build_bento,
    find_imported,
    import_model,
    reuse_imported,
    store_home,
)
from pzone_training.champion import find_champion, load_torch_champion
from pzone_training.onnx_export import (
    OPSET,
    PARITY_ATOL,
    Parity,
    ParityError,
    check_parity,
    export_onnx,
    parity_images,
)
from pzone_training.records import read_record, write_record

if TYPE_CHECKING:
    from torch import nn


def package_model(
    load: Callable[[], tuple[nn.Module, Mapping[str, Any]]],
    labels: Mapping[str, str],
    test_dir: Path,
    workdir: Path,
    name: str = "pzone-tilt",
    atol: float = PARITY_ATOL,
) -> tuple[Imported, Parity]:
    """Reuse the import of this MLflow version, or load the model (``load``), export, check and import it.

    Raises ParityError (nothing imported) when ONNX and torch disagree.
    """
    from pzone_model.runtime import MLFLOW_VERSION_LABEL

    version = labels.get(MLFLOW_VERSION_LABEL)
    existing = find_imported(name, version) if version else None
    if existing is not None:
        stored = existing.info.metadata.get("parity") or {}
        parity = Parity(**stored) if stored else Parity(0, 0.0, 0, 0, atol, "checked at import")
        return reuse_imported(existing), parity
    model, meta = load()
    meta = {
        "classes": list(meta["classes"]),
        "image_size": int(meta["image_size"]),
        "mean": [float(v) for v in meta["mean"]],
        "std": [float(v) for v in meta["std"]],
        **{k: meta[k] for k in ("arch",) if k in meta},
    }
    onnx_path = workdir / "model.onnx"
    export_onnx(model, meta, onnx_path)
    images, source = parity_images(test_dir, int(meta["image_size"]))
    parity = check_parity(onnx_path, model, images, source, atol)
    if not parity.ok:
        raise ParityError(
            f"ONNX and torch disagree on {source}: max |Δp| = {parity.max_abs_diff:.3g} (limit {atol:g}), "
            f"{parity.argmax_mismatches} different classes; nothing was imported"
        )
    meta_full = {**meta, "opset": OPSET, "parity": asdict(parity)}
    return import_model(onnx_path, meta_full, labels, name), parity


class PackageError(UserError):
    """There is no champion to package, or its ONNX graph or Bento failed their checks."""


def package_champion(
    client: Any,
    model_name: str,
    root: Path,
    *,
    run_file: Path = Path("models/run.json"),
    checkpoint: Path = Path("models/model.pt"),
    test_dir: Path = Path("data/prepared/test"),
    build: bool = True,
) -> dict[str, Any]:
    """The registry's champion into the BentoML store (made ``latest``) and the Bento built at ``root``; returns
    ``reports/package.json``'s record. Relative paths are the project's (``root``'s)."""
    from pzone_model.runtime import MLFLOW_VERSION_LABEL

    champion = find_champion(client, model_name)
    if champion is None:
        raise PackageError(f"{model_name} has no @champion yet")
    labels = {
        MLFLOW_VERSION_LABEL: champion.version,
        "mlflow_run_id": champion.run_id,
        "dataset_hash": champion.tags.get("dataset_hash", ""),
        "test_macro_f1": champion.tags.get("test_macro_f1", ""),
    }
    sources: list[str] = []

    def load() -> tuple[nn.Module, dict[str, Any]]:
        model, meta, source = load_torch_champion(
            champion, read_record(root / run_file), root / checkpoint, client
        )
        sources.append(source)
        return model, meta

    try:
        with tempfile.TemporaryDirectory() as tmp:
            imported, parity = package_model(load, labels, root / test_dir, Path(tmp), name=model_name)
        bento_tag, bento_action = build_bento(root, imported.tag) if build else ("", "skipped")
    except (ParityError, BentoError) as exc:
        raise PackageError(str(exc)) from None
    return {
        "champion": {"name": champion.name, "version": champion.version, "run_id": champion.run_id},
        "source": sources[0] if sources else "the earlier import",
        "model_tag": imported.tag,
        "model_action": imported.action,
        "bento_tag": bento_tag,
        "bento_action": bento_action,
        "parity": {**asdict(parity), "ok": parity.ok},
        "labels": labels,
        "bentoml_home": str(store_home(imported.tag)),
        "packaged_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def describe(record: dict[str, Any]) -> str:
    champion, parity = record["champion"], record["parity"]
    return (
        f"{champion['name']} v{champion['version']} → {record['model_tag']} ({record['model_action']}), Bento "
        f"{record['bento_tag']} ({record['bento_action']}); parity max |Δp| {parity['max_abs_diff']:.2g} on "
        f"{parity['n_images']} images"
    )


def main(
    run_file: Annotated[Path, typer.Option("--run", help="The train stage's run record.")] = Path(
        "models/run.json"
    ),
    checkpoint: Annotated[Path, typer.Option(help="The train stage's checkpoint.")] = Path("models/model.pt"),
    test_dir: Annotated[Path, typer.Option(help="Prepared test split for the parity check.")] = Path(
        "data/prepared/test"
    ),
    out: Annotated[Path, typer.Option(help="Where the packaging record is written.")] = Path(
        "reports/package.json"
    ),
    build: Annotated[bool, typer.Option(help="Also build the Bento (bentofile.yaml).")] = True,
) -> None:
    """Export the champion to ONNX, check it against torch, import it into BentoML and build the Bento."""
    from rich.console import Console

    from pzone_pipelines.settings import Settings
    from pzone_pipelines.tracking import configure_mlflow

    settings = Settings()
    configure_mlflow(settings)
    from mlflow import MlflowClient

    record = package_champion(
        MlflowClient(),
        settings.mlflow_model_name,
        Path.cwd(),
        run_file=run_file,
        checkpoint=checkpoint,
        test_dir=test_dir,
        build=build,
    )
    write_record(out, record)
    Console(stderr=True).print(describe(record))


if __name__ == "__main__":
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    from pzone.cli.common import run_command

    run_command(main)

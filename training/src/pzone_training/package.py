"""Stage `package`: the registry's champion → ONNX → the BentoML model store → a Bento of the model tier.

1. Find ``<model name>@champion`` in MLflow and its torch weights: ``models/model.pt`` when the champion is the
   model just trained (its run is the one in ``models/run.json``), else the ``checkpoint/model.pt`` artifact this
   stage logs to every champion's run, else the registry's pt2 graph.
2. Export it with ``torch.onnx.export`` (dynamo, opset 18, dynamic batch axis) wrapped so that the graph takes what
   the model tier has after letterboxing: uint8 (N, S, S, 3) in, probabilities out, with the training's
   normalization and flip averaging inside (the same numbers ``pzone_training.models.predict`` gives).
3. Check parity on the test split: ONNX Runtime against torch, max |Δp| ≤ 1e-4 and the same class wherever the
   top two probabilities are further apart than that. A failure stops the stage and imports nothing.
4. Import it as ``pzone-tilt`` into the BentoML store (``$BENTOML_HOME``, default ``$PZONE_DATA_DIR/bentoml``),
   labelled with its MLflow version; build the Bento from ``bentofile.yaml``. Both are reused when the champion
   (and the serving code) did not change; a champion that moved back to an older import is made ``latest`` again,
   which is what the serving tier follows.

Writes ``reports/package.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

if TYPE_CHECKING:
    from torch import nn

CHAMPION = "champion"
OPSET = 18
PARITY_ATOL = 1e-4
MAX_PARITY_IMAGES = 2048
CHECKPOINT_ARTIFACT = "checkpoint"  # artifact folder of a champion's run that holds its model.pt
BENTOFILE = "bentofile.yaml"
# What the Bento's source holds, relative to the repository root → inside the build context. The model tier needs
# only these three files of pzone-core (settings and the shared preprocessing), not its database stack.
BENTO_SOURCES: tuple[tuple[str, str], ...] = (
    ("serving/model/src/pzone_model", "pzone_model"),
    ("core/src/pzone/__init__.py", "pzone/__init__.py"),
    ("core/src/pzone/settings.py", "pzone/settings.py"),
    ("core/src/pzone/preprocess.py", "pzone/preprocess.py"),
)


class PackageError(RuntimeError):
    """The stage cannot package the champion; nothing was imported."""


class ParityError(PackageError):
    """The ONNX graph does not answer like the torch model."""


@dataclass(frozen=True)
class Champion:
    name: str
    version: str
    run_id: str
    tags: dict[str, str]


@dataclass(frozen=True)
class Parity:
    n_images: int
    max_abs_diff: float
    argmax_mismatches: int
    near_ties: int
    atol: float
    source: str  # which images: the test split, or random ones when it is empty

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol and self.argmax_mismatches == 0


@dataclass(frozen=True)
class Imported:
    tag: str
    action: str  # imported | reused | made-latest


# --- the champion -------------------------------------------------------------------------------------------


def find_champion(client: Any, name: str) -> Champion | None:
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
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


# --- export and parity ----------------------------------------------------------------------------------------


def probs_module(model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> nn.Module:
    """uint8 (N, S, S, 3) → probabilities (N, C): ``normalize_batch`` + flip averaging of ``predict``, in-graph."""
    import torch
    from torch import nn

    class Probs(nn.Module):
        mean: torch.Tensor
        std: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = (images.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
            probs = torch.softmax(self.model(x).float(), dim=1)
            return (probs + torch.softmax(self.model(x.flip(3)).float(), dim=1)) / 2

    return Probs().eval()


def export_onnx(model: nn.Module, meta: Mapping[str, Any], path: Path, opset: int = OPSET) -> None:
    """One self-contained .onnx file (no external data), batch axis dynamic, spatial size fixed."""
    import torch

    from pzone_model.runtime import INPUT_NAME, OUTPUT_NAME

    size = int(meta["image_size"])
    wrapped = probs_module(model, tuple(meta["mean"]), tuple(meta["std"]))
    # Batch 2: torch.export specializes a size-1 dimension, and the batch must stay dynamic.
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def parity_images(test_dir: Path, size: int, limit: int = MAX_PARITY_IMAGES) -> tuple[np.ndarray, str]:
    """The test split at the model's size, or seeded random images when there is none."""
    from pzone_training.data import resize_square

    path = test_dir / "images.npy"
    if path.exists():
        images = np.load(path)
        if len(images):
            return resize_square(images[:limit], size), f"{test_dir} ({min(len(images), limit)} images)"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (32, size, size, 3), dtype=np.uint8), "32 random images (no test split)"


def check_parity(
    onnx_path: Path, model: nn.Module, images: np.ndarray, source: str, atol: float = PARITY_ATOL
) -> Parity:
    """ONNX Runtime vs torch (``pzone_training.models.predict`` with flip averaging) on the same images."""
    from pzone_model.runtime import open_session
    from pzone_training.models import predict

    expected = predict(model, images, batch_size=64, flip_tta=True)
    session = open_session(onnx_path, threads=max(1, min(4, os.cpu_count() or 1)))
    got = (
        np.concatenate(
            [session.run(None, {"images": images[i : i + 64]})[0] for i in range(0, len(images), 64)]
        )
        if len(images)
        else np.zeros_like(expected)
    )
    if got.shape != expected.shape:
        raise ParityError(f"the ONNX graph answers {got.shape}, torch {expected.shape}")
    diff = float(np.abs(got - expected).max()) if got.size else 0.0
    top2 = np.sort(expected, axis=1)[:, -2:] if expected.shape[1] > 1 else np.zeros((len(expected), 2))
    decided = (top2[:, 1] - top2[:, 0]) > atol  # a near-tie may flip on rounding alone
    mismatch = got.argmax(axis=1) != expected.argmax(axis=1)
    return Parity(
        n_images=len(images),
        max_abs_diff=diff if math.isfinite(diff) else float("inf"),
        argmax_mismatches=int((mismatch & decided).sum()),
        near_ties=int((~decided).sum()),
        atol=atol,
        source=source,
    )


# --- the BentoML store ----------------------------------------------------------------------------------------


def find_imported(name: str, mlflow_version: str) -> Any | None:
    """The newest stored model of that name carrying that MLflow version label, or None."""
    import bentoml
    from bentoml.exceptions import NotFound

    from pzone_model.runtime import MLFLOW_VERSION_LABEL

    try:
        models = bentoml.models.list(name)
    except NotFound:
        return None
    same = [m for m in models if m.info.labels.get(MLFLOW_VERSION_LABEL) == mlflow_version]
    return max(same, key=lambda m: m.creation_time) if same else None


def make_latest(tag: str) -> bool:
    """Point ``<name>:latest`` at this stored model (what the serving tier and a Bento build follow).

    BentoML keeps the pointer as the file ``<store>/<name>/latest``; it moves by itself only on a newer import.
    """
    import bentoml
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.tag import Tag

    stored = bentoml.models.get(tag)
    if str(bentoml.models.get(f"{stored.tag.name}:latest").tag) == str(stored.tag):
        return False
    latest = Path(BentoMLContainer.model_store.get()._path) / Tag(stored.tag.name, None).latest_path()
    tmp = latest.with_suffix(".tmp")
    tmp.write_text(str(stored.tag.version))
    os.replace(tmp, latest)  # the watcher may be reading it
    return True


def import_model(
    onnx_path: Path, meta: Mapping[str, Any], labels: Mapping[str, str], name: str = "pzone-tilt"
) -> Imported:
    """Copy the graph and its metadata into the store; reuse an import with the same MLflow version label."""
    import bentoml

    from pzone_model.runtime import META_FILE, MLFLOW_VERSION_LABEL, ONNX_FILE, ModelMeta

    ModelMeta.from_dict(meta)  # refuse incomplete metadata before anything is stored
    version = labels.get(MLFLOW_VERSION_LABEL)
    existing = find_imported(name, version) if version else None
    if existing is not None:
        moved = make_latest(str(existing.tag))
        return Imported(str(existing.tag), "made-latest" if moved else "reused")
    with bentoml.models.create(name, labels=dict(labels), metadata=_plain(meta)) as stored:
        target = Path(stored.path)
        shutil.copyfile(onnx_path, target / ONNX_FILE)
        (target / META_FILE).write_text(json.dumps(_plain(meta), indent=1, sort_keys=True) + "\n")
    return Imported(str(stored.tag), "imported")


def _plain(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as JSON types only (BentoML refuses tuples inside and numpy scalars)."""
    return dict(json.loads(json.dumps(dict(meta), default=str)))


# --- the Bento ------------------------------------------------------------------------------------------------


@contextmanager
def build_context(root: Path) -> Iterator[Path]:
    """A temporary build context: bentofile.yaml and exactly the sources the Bento needs, at import paths."""
    with tempfile.TemporaryDirectory(prefix="pzone-bento-") as tmp:
        ctx = Path(tmp)
        shutil.copyfile(root / BENTOFILE, ctx / BENTOFILE)
        for source, dest in BENTO_SOURCES:
            src, dst = root / source, ctx / dest
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copyfile(src, dst)
        yield ctx


def source_hash(ctx: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in ctx.rglob("*") if p.is_file()):
        digest.update(path.relative_to(ctx).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_bento(root: Path, model_tag: str) -> tuple[str, str]:
    """Build the Bento for this model (reused when one with the same model and sources exists)."""
    import bentoml

    with build_context(root) as ctx:
        code = source_hash(ctx)
        name = _bento_name(ctx / BENTOFILE)
        for bento in _list_bentos(name):
            if (
                bento.info.labels.get("model_tag") == model_tag
                and bento.info.labels.get("source_hash") == code
            ):
                return str(bento.tag), "reused"
        bento = bentoml.bentos.build_bentofile(
            str(ctx / BENTOFILE), build_ctx=str(ctx), labels={"model_tag": model_tag, "source_hash": code}
        )
    packed = [str(m.tag) for m in bento.info.all_models]
    if packed != [model_tag]:
        bentoml.bentos.delete(str(bento.tag))
        raise PackageError(f"the Bento packed {packed}, not the champion {model_tag}: is it `latest`?")
    return str(bento.tag), "built"


def _bento_name(bentofile: Path) -> str | None:
    import yaml

    return (yaml.safe_load(bentofile.read_text()) or {}).get("name")


def _list_bentos(name: str | None) -> list[Any]:
    import bentoml
    from bentoml.exceptions import NotFound

    if not name:
        return []
    try:
        return list(bentoml.bentos.list(name))
    except NotFound:
        return []


# --- the stage ------------------------------------------------------------------------------------------------


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
        moved = make_latest(str(existing.tag))
        return Imported(str(existing.tag), "made-latest" if moved else "reused"), parity
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


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

    console = Console(stderr=True)
    settings = Settings()
    # Before bentoml is imported: it reads BENTOML_HOME once. The store stays inside the data folder.
    os.environ.setdefault("BENTOML_HOME", str((settings.data_dir / "bentoml").resolve()))
    configure_mlflow(settings)
    from mlflow import MlflowClient

    from pzone_model.runtime import MLFLOW_VERSION_LABEL

    client = MlflowClient()
    champion = find_champion(client, settings.mlflow_model_name)
    if champion is None:
        console.print(f"[red]package failed:[/red] {settings.mlflow_model_name} has no @champion yet")
        raise typer.Exit(1)
    labels = {
        MLFLOW_VERSION_LABEL: champion.version,
        "mlflow_run_id": champion.run_id,
        "dataset_hash": champion.tags.get("dataset_hash", ""),
        "test_macro_f1": champion.tags.get("test_macro_f1", ""),
    }
    sources: list[str] = []

    def load() -> tuple[nn.Module, dict[str, Any]]:
        model, meta, source = load_torch_champion(champion, _read_json(run_file), checkpoint, client)
        sources.append(source)
        return model, meta

    try:
        with tempfile.TemporaryDirectory() as tmp:
            imported, parity = package_model(
                load, labels, test_dir, Path(tmp), name=settings.mlflow_model_name
            )
        bento_tag, bento_action = build_bento(Path.cwd(), imported.tag) if build else ("", "skipped")
    except PackageError as exc:
        console.print(f"[red]package failed:[/red] {exc}")
        raise typer.Exit(1) from None

    record = {
        "champion": {"name": champion.name, "version": champion.version, "run_id": champion.run_id},
        "source": sources[0] if sources else "the earlier import",
        "model_tag": imported.tag,
        "model_action": imported.action,
        "bento_tag": bento_tag,
        "bento_action": bento_action,
        "parity": {**asdict(parity), "ok": parity.ok},
        "labels": labels,
        "bentoml_home": os.environ["BENTOML_HOME"],
        "packaged_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    console.print(
        f"{champion.name} v{champion.version} → {imported.tag} ({imported.action}), Bento {bento_tag} "
        f"({bento_action}); parity max |Δp| {parity.max_abs_diff:.2g} on {parity.n_images} images"
    )


if __name__ == "__main__":
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    typer.run(main)

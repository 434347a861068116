"""The model tier's model in the BentoML store, and the Bento that serves it.

An ONNX graph is imported as ``pzone-tilt`` into the store (``$BENTOML_HOME``), labelled with its MLflow version;
the Bento is built from ``bentofile.yaml``. Both are reused when the champion (and the serving code) did not
change; a champion that moved back to an older import is made ``latest`` again, which is what the serving tier
follows.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENTOFILE = "bentofile.yaml"
# What the Bento's source holds, relative to the repository root → inside the build context. The model tier needs
# only these files of pzone-core (settings, the tilt classes its defaults read, the shared preprocessing, the HTTP
# contract it answers), not its database stack.
BENTO_SOURCES: tuple[tuple[str, str], ...] = (
    ("serving/model/src/pzone_model", "pzone_model"),
    ("core/src/pzone/__init__.py", "pzone/__init__.py"),
    ("core/src/pzone/settings.py", "pzone/settings.py"),
    ("core/src/pzone/tilt.py", "pzone/tilt.py"),
    ("core/src/pzone/preprocess.py", "pzone/preprocess.py"),
    ("core/src/pzone/tier_contract.py", "pzone/tier_contract.py"),
)


class BentoError(RuntimeError):
    """The built Bento does not pack the champion; it was deleted again."""


@dataclass(frozen=True)
class Imported:
    tag: str
    action: str  # imported | reused | made-latest


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


def reuse_imported(stored: Any) -> Imported:
    """An earlier import of the same MLflow version, made ``latest`` again when a newer import had replaced it."""
    moved = make_latest(str(stored.tag))
    return Imported(str(stored.tag), "made-latest" if moved else "reused")


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
        return reuse_imported(existing)
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
        raise BentoError(f"the Bento packed {packed}, not the champion {model_tag}: is it `latest`?")
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

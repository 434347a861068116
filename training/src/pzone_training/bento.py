"""The model tier's model in the BentoML store, and the Bento that serves it.

An ONNX graph is imported as ``pzone-tilt`` into BentoML's store (``$BENTOML_HOME``, BentoML's default
``~/bentoml`` when unset: the store ``bentoml serve`` at the repository root reads), labelled with its MLflow
version; the Bento is built at the repository root from ``bentofile.yaml``, as ``bentoml build`` builds it. Both
are reused when the champion (and the serving code) did not change; a champion that moved back to an older import
is made ``latest`` again, which is what the serving tier follows. BentoML's public API only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENTOFILE = "bentofile.yaml"


class BentoError(RuntimeError):
    """The Bento cannot be built as bentofile.yaml says, or the one built is not the champion's with exactly the
    listed sources (it was deleted again)."""


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

    BentoML keeps the pointer as the file ``latest`` beside the model's versions (``<store>/<name>/latest``) and
    moves it by itself only on a newer import; ``bentoml.models`` has no call that moves it back.
    """
    import bentoml

    stored = bentoml.models.get(tag)
    if str(bentoml.models.get(f"{stored.tag.name}:latest").tag) == str(stored.tag):
        return False
    latest = Path(stored.path).parent / "latest"
    tmp = latest.with_suffix(".tmp")
    tmp.write_text(str(stored.tag.version))
    os.replace(tmp, latest)  # the watcher may be reading it
    return True


def store_home(tag: str) -> Path:
    """The BentoML store (its home folder) that holds this model."""
    import bentoml

    return Path(bentoml.models.get(tag).path).parents[2]  # <home>/models/<name>/<version>


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


def _bentofile(root: Path) -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load((root / BENTOFILE).read_text(encoding="utf-8")) or {})


def bento_sources(root: Path) -> list[str]:
    """The files a Bento build at ``root`` takes in (bentofile.yaml's ``include``), relative to ``root``.

    Every pattern must be anchored (a leading ``/``): BentoML matches them gitignore-style, where an anchored
    pattern means what a glob from the root means; a bare name would match in every folder of the context.
    """
    found: set[str] = set()
    for pattern in _bentofile(root).get("include") or []:
        if not pattern.startswith("/"):
            raise BentoError(
                f"{BENTOFILE}: include {pattern!r} must be a path from the root, with a leading '/'"
            )
        matched: set[Path] = set()
        for path in root.glob(pattern.lstrip("/")):
            matched |= set(path.rglob("*")) if path.is_dir() else {path}
        files = {
            p.relative_to(root).as_posix() for p in matched if p.is_file() and "__pycache__" not in p.parts
        }
        if not files:
            raise BentoError(f"{BENTOFILE}: include {pattern!r} matches no file under {root}")
        found |= files
    return sorted(found)


def source_hash(root: Path, sources: list[str]) -> str:
    """What the Bento's code is made of: bentofile.yaml and every source file, names and contents."""
    digest = hashlib.sha256()
    for rel in [BENTOFILE, *sources]:
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_bento(root: Path, model_tag: str) -> tuple[str, str]:
    """Build the Bento for this model at ``root`` (reused when one with the same model and sources exists).

    Raises BentoError (the Bento deleted again) when it does not pack ``model_tag`` or its source is not exactly
    :func:`bento_sources`."""
    import bentoml

    sources = bento_sources(root)
    code = source_hash(root, sources)
    for bento in _list_bentos(_bentofile(root).get("name")):
        if bento.info.labels.get("model_tag") == model_tag and bento.info.labels.get("source_hash") == code:
            return str(bento.tag), "reused"
    bento = bentoml.bentos.build_bentofile(
        str(root / BENTOFILE), build_ctx=str(root), labels={"model_tag": model_tag, "source_hash": code}
    )
    packed = [str(m.tag) for m in bento.info.all_models]
    src = Path(bento.path) / "src"
    held = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    problem = None
    if packed != [model_tag]:
        problem = f"the Bento packed {packed}, not the champion {model_tag}: is it `latest`?"
    elif held != sorted([BENTOFILE, *sources]):
        extra, missing = sorted(set(held) - {BENTOFILE, *sources}), sorted(set(sources) - set(held))
        problem = f"the Bento's source is not {BENTOFILE}'s include (extra {extra}, missing {missing})"
    if problem:
        bentoml.bentos.delete(str(bento.tag))
        raise BentoError(problem)
    return str(bento.tag), "built"


def _list_bentos(name: str | None) -> list[Any]:
    import bentoml
    from bentoml.exceptions import NotFound

    if not name:
        return []
    try:
        return list(bentoml.bentos.list(name))
    except NotFound:
        return []

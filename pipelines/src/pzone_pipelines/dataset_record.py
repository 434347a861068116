"""What a training run records of the data and code it trained from, so that its dataset can be recovered and its
lineage told without the platform: the one description of that record, written by the train stage and read by
`pzone dataset pull`, `pzone lineage` and `pzone compare`.

In the run's artifacts, folder :data:`LINEAGE_ARTIFACT`:

* ``dvc.lock`` — the project's lock as the train stage found it: its ``snapshot`` and ``prepare`` entries are the
  hashes of exactly the data this run trained on (DVC writes each stage's entry as the stage finishes);
* ``params.yaml`` — the whole params file (labels, prepare, train, …);
* ``manifest.json`` — the snapshot's manifest (per image: sha256, label, label source, photo ids);
* ``prepared_ids.json`` — ``{split: [sha256, …]}``, the prepare stage's split of it.

Tags: :data:`DATASET_DIGEST_TAG` (DVC's md5 of ``data/snapshot``), :data:`CODE_COMMIT_TAG` (``git rev-parse HEAD``
of the project, else ``$PZONE_CODE_COMMIT``, else ``unknown``) and :data:`CODE_DIRTY_TAG`. And an MLflow dataset
input (``mlflow.log_input``, context ``training``): digest, source (the DVC remote's URL of the snapshot), row count
and class counts (:func:`dataset_input_tags`).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LINEAGE_ARTIFACT = "lineage"
LOCK_FILE = "dvc.lock"
PARAMS_FILE = "params.yaml"
MANIFEST_FILE = "manifest.json"
PREPARED_IDS_FILE = "prepared_ids.json"
DATASET_DIGEST_TAG = "pzone.dataset_digest"
CODE_COMMIT_TAG = "pzone.code_commit"
CODE_DIRTY_TAG = "pzone.code_dirty"
DATASET_NAME = "pzone-snapshot"
DATASET_CONTEXT = "training"
SPLITS = ("train", "val", "test")
UNKNOWN_COMMIT = "unknown"
LOCAL_REMOTE = ".pzone/dvc-remote"  # .dvc/config's default remote, relative to the project root


def code_commit(root: Path, env: Mapping[str, str] | None = None) -> tuple[str, bool | None]:
    """The code's commit and whether the work tree differs from it (None: not known). A git work tree answers for
    itself; elsewhere (an image, the demo's copy) ``PZONE_CODE_COMMIT`` says, else ``unknown``."""
    env = os.environ if env is None else env

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    commit = git("rev-parse", "HEAD") if top and Path(top).resolve() == root.resolve() else None
    if commit:
        status = git("status", "--porcelain", "--untracked-files=no")
        return commit, (bool(status) if status is not None else None)
    return (env.get("PZONE_CODE_COMMIT") or UNKNOWN_COMMIT), None


def read_manifest(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path} is not a snapshot manifest")
    return data


def class_counts(manifest: Mapping[str, Any]) -> dict[str, int]:
    return dict(sorted(Counter(str(image["label"]) for image in manifest["images"]).items()))


def prepared_ids(prepared_dir: Path) -> dict[str, list[str]]:
    """``{split: ids}`` of the prepare stage's splits (a split that is not there is left out)."""
    found: dict[str, list[str]] = {}
    for split in SPLITS:
        path = prepared_dir / split / "ids.json"
        if path.is_file():
            found[split] = [str(i) for i in json.loads(path.read_text(encoding="utf-8"))]
    return found


def dataset_input_tags(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The tags of the run's dataset input: its row count and class counts (MLflow input tags are strings)."""
    return {"rows": str(len(manifest["images"])), "class_counts": json.dumps(class_counts(manifest))}


def snapshot_source(remote_url: str | None, digest: str) -> str:
    """Where the snapshot's content lives: the DVC remote's object of the snapshot's directory listing."""
    md5 = digest.removesuffix(".dir")
    base = (remote_url or LOCAL_REMOTE).rstrip("/")
    return f"{base}/files/md5/{md5[:2]}/{md5[2:]}.dir" if md5 else base


def write_lineage(folder: Path, root: Path, manifest_path: Path, prepared_dir: Path) -> None:
    """The artifacts of :data:`LINEAGE_ARTIFACT` into ``folder`` (then logged as one folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (LOCK_FILE, PARAMS_FILE):
        source = root / name
        if source.is_file():
            (folder / name).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    if manifest_path.is_file():
        (folder / MANIFEST_FILE).write_text(manifest_path.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / PREPARED_IDS_FILE).write_text(json.dumps(prepared_ids(prepared_dir)) + "\n", encoding="utf-8")

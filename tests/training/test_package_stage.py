"""The `package` stage: ONNX export and parity on a tiny torch model, idempotent import into the BentoML store, a
parity failure that imports nothing, rollback to an older import, the Bento build, and the Bento's pinned packages."""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

from pzone_training import package as pkg
from pzone_training.bento import (
    BENTOFILE,
    BentoError,
    Imported,
    bento_sources,
    build_bento,
    import_model,
    store_home,
)
from pzone_training.champion import CHECKPOINT_ARTIFACT, Champion, load_torch_champion
from pzone_training.onnx_export import ParityError
from tests.support.bentoml_store import fresh_store
from tests.support.paths import REPO
from tests.support.tiny_model import META, import_tiny, tiny_onnx


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An empty BentoML store for this process; the test's work folder."""
    fresh_store()
    return tmp_path


def tiny_torch(size: int = 32) -> tuple[Any, dict[str, Any]]:
    import torch

    from pzone_training.models import build_model

    torch.manual_seed(0)
    model = build_model("tiny_cnn").eval()
    return model, {**META, "image_size": size, "arch": "tiny_cnn"}


def make_test_split(folder: Path, n: int = 24, size: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    np.save(folder / "images.npy", rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    return folder


def stored_models() -> list[Any]:
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return list(bentoml.models.list("pzone-tilt"))
    except NotFound:
        return []


@pytest.mark.unit
@pytest.mark.slow
def test_export_parity_and_idempotent_import(store: Path) -> None:
    import bentoml

    from pzone_model.runtime import ONNX_FILE, load_model, read_meta
    from pzone_training.models import predict

    model, meta = tiny_torch()
    test_dir = make_test_split(store / "test")
    labels = {"mlflow_version": "4", "dataset_hash": "md5abc", "test_macro_f1": "0.9"}
    imported, parity = pkg.package_model(lambda: (model, meta), labels, test_dir, store / "work")
    assert imported.action == "imported" and parity.ok
    assert parity.n_images == 24 and parity.max_abs_diff <= 1e-4 and parity.argmax_mismatches == 0

    stored = bentoml.models.get(imported.tag)
    assert stored.info.labels == labels
    assert read_meta(Path(stored.path)).image_size == 32
    assert stored.info.metadata["parity"]["n_images"] == 24

    # What the model tier loads answers like torch's predict (normalization and flip averaging are in the graph),
    # for any batch size (the batch axis is dynamic).
    served = load_model(Path(stored.path), imported.tag, "pzone-tilt/4", threads=1)
    images = np.random.default_rng(2).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    assert np.abs(served.predict(images) - predict(model, images)).max() <= 1e-4
    assert served.predict(images[:1]).shape == (1, 3)
    assert (Path(stored.path) / ONNX_FILE).stat().st_size > 0

    def must_not_load() -> tuple[Any, Mapping[str, Any]]:
        raise AssertionError("an unchanged champion must not be exported again")

    again, parity_again = pkg.package_model(must_not_load, labels, test_dir, store / "work2")
    assert again == Imported(imported.tag, "reused")
    assert parity_again.n_images == 24
    assert len(stored_models()) == 1


@pytest.mark.unit
def test_parity_failure_is_clear_and_imports_nothing(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, meta = tiny_torch()

    def wrong_export(_model: Any, _meta: Any, path: Path, opset: int = 18) -> None:
        tiny_onnx(path, (0.0, 9.0, 0.0))  # a graph that answers something else

    monkeypatch.setattr(pkg, "export_onnx", wrong_export)
    with pytest.raises(ParityError, match=r"max \|Δp\|.*nothing was imported"):
        pkg.package_model(
            lambda: (model, meta), {"mlflow_version": "5"}, make_test_split(store / "test"), store / "work"
        )
    assert stored_models() == []


@pytest.mark.unit
def test_rollback_makes_the_older_import_latest_again(store: Path) -> None:
    import bentoml

    first = import_tiny(store, (5, 0, 0), "1")
    second = import_tiny(store, (0, 0, 5), "2")
    assert str(bentoml.models.get("pzone-tilt:latest").tag) == second

    def must_not_load() -> tuple[Any, Mapping[str, Any]]:
        raise AssertionError("already imported")

    back, _ = pkg.package_model(must_not_load, {"mlflow_version": "1"}, store / "none", store / "work")
    assert back == Imported(first, "made-latest")
    assert str(bentoml.models.get("pzone-tilt:latest").tag) == first
    assert store_home(first) == Path(os.environ["BENTOML_HOME"])  # what reports/package.json records
    assert pkg.package_model(must_not_load, {"mlflow_version": "1"}, store, store)[0].action == "reused"


@pytest.mark.unit
def test_incomplete_metadata_is_refused_before_the_store(store: Path) -> None:
    onnx_path = tiny_onnx(store / "m.onnx", (1, 0, 0))
    with pytest.raises(ValueError, match="metadata"):
        import_model(onnx_path, {"classes": ["a"]}, {"mlflow_version": "9"})
    assert stored_models() == []


@pytest.mark.unit
def test_checkpoint_of_the_just_trained_champion_is_used_and_kept(tmp_path: Path) -> None:
    from pzone_training.models import save_checkpoint

    model, meta = tiny_torch()
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, model, {**meta, "params": {}})

    class Client:
        def __init__(self) -> None:
            self.logged: list[tuple[str, str, str]] = []

        def list_artifacts(self, run_id: str, path: str) -> list[Any]:
            return []

        def log_artifact(self, run_id: str, local: str, path: str) -> None:
            self.logged.append((run_id, local, path))

    client = Client()
    champion = Champion("pzone-tilt", "3", "run-3", {})
    _, loaded_meta, source = load_torch_champion(champion, {"run_id": "run-3"}, checkpoint, client)
    assert source == str(checkpoint) and loaded_meta["image_size"] == 32
    assert client.logged == [("run-3", str(checkpoint), CHECKPOINT_ARTIFACT)]


@pytest.mark.unit
def test_bentofile_pins_are_the_installed_versions() -> None:
    config = yaml.safe_load((REPO / BENTOFILE).read_text())
    pins = dict(p.split("==") for p in config["python"]["packages"])
    assert {name: version(name) for name in pins} == pins
    assert config["service"] == "service:PZoneTilt"  # the repository root's service.py
    assert config["python"]["lock_packages"] is False  # builds offline


@pytest.mark.integration
@pytest.mark.slow
def test_build_bento_packs_the_champion_and_is_reused(store: Path) -> None:
    import bentoml

    tag = import_tiny(store, (5, 0, 0), "1")
    bento_tag, action = build_bento(REPO, tag)
    assert action == "built"
    bento = bentoml.bentos.get(bento_tag)
    assert [str(m.tag) for m in bento.info.all_models] == [tag]
    src = Path(bento.path) / "src"
    for name in (
        "service.py",
        "serving/model/src/pzone_model/service.py",
        "serving/model/src/pzone_model/runtime.py",
        "core/src/pzone/preprocess.py",
        "core/src/pzone/settings.py",
        "core/src/pzone/tilt.py",
    ):
        assert (src / name).is_file(), name
    assert not (src / "core" / "src" / "pzone" / "db").exists()  # no database stack in the model tier
    assert bento.info.labels["model_tag"] == tag
    requirements = (Path(bento.path) / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime==1.32.0" in requirements and "torch" not in requirements
    assert build_bento(REPO, tag) == (bento_tag, "reused")


@pytest.mark.unit
def test_the_bentos_sources_are_the_bentofiles_include(tmp_path: Path) -> None:
    """Listed as BentoML matches them; a pattern that would not mean the same (not anchored) or that matches
    nothing is refused before any build."""
    sources = bento_sources(REPO)
    assert "service.py" in sources and "serving/model/src/pzone_model/service.py" in sources
    assert "core/src/pzone/tier_contract.py" in sources and "core/src/pzone/db/models.py" not in sources
    assert not any("__pycache__" in s or not s.endswith(".py") for s in sources)

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("")
    for include, error in (
        (["service.py"], "must be a path from the root"),
        (["/nothing/**/*.py"], "matches no file"),
    ):
        (tmp_path / BENTOFILE).write_text(yaml.safe_dump({"include": include}))
        with pytest.raises(BentoError, match=error):
            bento_sources(tmp_path)
    (tmp_path / BENTOFILE).write_text(yaml.safe_dump({"include": ["/pkg/"]}))
    assert bento_sources(tmp_path) == ["pkg/a.py"]


@pytest.mark.unit
def test_a_bento_without_exactly_its_sources_is_deleted_and_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What BentoML copied is checked against the list (a .bentoignore or an `exclude` could drop a file the tier
    imports): the Bento is deleted again and the stage fails with what differs."""
    import bentoml

    src = tmp_path / "bento" / "src"
    for rel in [BENTOFILE, *bento_sources(REPO)]:
        if rel != "core/src/pzone/tilt.py":
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_text("")

    built = SimpleNamespace(
        tag="pzone-tilt-service:abc",
        path=str(tmp_path / "bento"),
        info=SimpleNamespace(all_models=[SimpleNamespace(tag="pzone-tilt:v1")]),
    )
    deleted: list[str] = []
    monkeypatch.setattr(bentoml.bentos, "list", lambda *a, **k: [])
    monkeypatch.setattr(bentoml.bentos, "build_bentofile", lambda *a, **k: built)
    monkeypatch.setattr(bentoml.bentos, "delete", deleted.append)
    with pytest.raises(BentoError, match=r"missing \['core/src/pzone/tilt.py'\]"):
        build_bento(REPO, "pzone-tilt:v1")
    assert deleted == ["pzone-tilt-service:abc"]

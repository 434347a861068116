"""A tiny real `dvc repro` in a temp project: platform → snapshot → prepare → train → evaluate → register."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.support.repro import make_project, populate_platform, project_env, run_dvc, write_params

TINY = {
    "prepare": {"image_size": 64, "val_fraction": 0.15, "test_fraction": 0.2},
    "train": {"epochs": 20, "batch_size": 32},
    "register": {"margin": 0.02, "min_macro_f1": 0.3},
}


def model_versions(root: Path) -> dict[str, str]:
    """Registered versions of the project's model → their aliases (read with MLflow's own client)."""
    import os

    env = project_env(root)
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        from mlflow import MlflowClient

        from pzone_pipelines.settings import Settings
        from pzone_pipelines.tracking import configure_mlflow

        configure_mlflow(Settings())
        client = MlflowClient()
        found = client.search_model_versions("name='pzone-tilt'")
        # search results leave aliases out: ask for each version
        full = [client.get_model_version("pzone-tilt", str(v.version)) for v in found]
        return {str(v.version): ",".join(sorted(v.aliases)) for v in full}
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.e2e
@pytest.mark.slow
def test_empty_platform_fails_clearly_and_registers_nothing(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", TINY)
    populate_platform(root, 0, seed=1)
    done = run_dvc(root, "repro", check=False)
    assert done.returncode != 0
    assert "no labeled photos" in done.stdout + done.stderr
    assert not (root / "models" / "model.pt").exists() and not (root / "reports" / "decision.json").exists()


@pytest.mark.e2e
@pytest.mark.slow
def test_repro_trains_registers_skips_when_unchanged_and_gates_a_bad_challenger(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", TINY)
    populate_platform(root, 400, seed=3)

    run_dvc(root, "repro")
    history = list(csv.DictReader((root / "reports" / "train_history.csv").open()))
    losses = [float(row["train_loss"]) for row in history]
    assert len(losses) == TINY["train"]["epochs"] and losses[-1] < losses[0]  # it learns
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"upright", "tilted", "fallen"}
    decision = json.loads((root / "reports" / "decision.json").read_text())
    assert decision["promote"] is True, decision
    assert model_versions(root) == {"1": "challenger,champion"}
    snapshot_files = sorted(p.name for p in (root / "data" / "snapshot" / "images").rglob("*.jpg"))
    assert len(snapshot_files) == 400

    # Nothing changed on the platform: only the snapshot looks, everything downstream is skipped.
    lock = (root / "dvc.lock").read_text()
    again = run_dvc(root, "repro")
    for stage in ("prepare", "train", "evaluate", "register", "package"):
        assert f"Stage '{stage}' didn't change, skipping" in again.stdout, again.stdout
    assert (root / "dvc.lock").read_text() == lock
    assert model_versions(root) == {"1": "challenger,champion"}

    # A challenger trained on shuffled labels is registered but does not take the champion's place.
    write_params(root, {**TINY, "train": {**TINY["train"], "shuffle_labels": True}})
    run_dvc(root, "repro")
    decision = json.loads((root / "reports" / "decision.json").read_text())
    assert decision["promote"] is False, decision
    assert decision["champion_version"] == "1"
    assert model_versions(root) == {"1": "champion", "2": "challenger"}
    champion = json.loads((root / "reports" / "champion_metrics.json").read_text())
    assert champion["macro_f1"] > decision["challenger_macro_f1"]

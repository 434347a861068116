"""A tiny real `dvc repro` in a temp project: platform → snapshot → prepare → train → evaluate → propose, which
registers and serves nothing (`pzone promote` does)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.support.repro import (
    make_project,
    populate_platform,
    registry,
    run_dvc,
    run_pzone,
    served_model,
    write_params,
)

TINY = {
    "prepare": {"image_size": 64, "val_fraction": 0.15, "test_fraction": 0.2},
    "train": {"epochs": 20, "batch_size": 32},
    "register": {"margin": 0.02, "min_macro_f1": 0.3},
}


@pytest.mark.e2e
@pytest.mark.slow
def test_empty_platform_fails_clearly_and_registers_nothing(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", TINY)
    populate_platform(root, 0, seed=1)
    done = run_dvc(root, "repro", check=False)
    assert done.returncode != 0
    assert "no labeled photos" in done.stdout + done.stderr
    assert not (root / "models" / "model.pt").exists() and not (root / "reports" / "proposal.json").exists()


@pytest.mark.e2e
@pytest.mark.slow
def test_repro_trains_proposes_skips_when_unchanged_and_proposes_no_bad_challenger(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", TINY)
    populate_platform(root, 400, seed=3)

    run_dvc(root, "repro")
    history = list(csv.DictReader((root / "reports" / "train_history.csv").open()))
    losses = [float(row["train_loss"]) for row in history]
    assert len(losses) == TINY["train"]["epochs"] and losses[-1] < losses[0]  # it learns
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"upright", "tilted", "fallen"}
    proposal = json.loads((root / "reports" / "proposal.json").read_text())
    assert proposal["promote"] is True and proposal["challenger_macro_f1"] == metrics["macro_f1"], proposal
    assert proposal["run_id"] == json.loads((root / "models" / "run.json").read_text())["run_id"]
    assert registry(root) == {} and served_model(root) is None  # proposed, never registered nor served
    snapshot_files = sorted(p.name for p in (root / "data" / "snapshot" / "images").rglob("*.jpg"))
    assert len(snapshot_files) == 400
    promoted = run_pzone(root, "promote", "--project", str(root))
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert registry(root) == {"1": "challenger,champion"}

    # Nothing changed on the platform: only the snapshot looks, everything downstream is skipped.
    lock = (root / "dvc.lock").read_text()
    again = run_dvc(root, "repro")
    for stage in ("prepare", "train", "evaluate", "propose"):
        assert f"Stage '{stage}' didn't change, skipping" in again.stdout, again.stdout
    assert (root / "dvc.lock").read_text() == lock
    assert registry(root) == {"1": "challenger,champion"}

    # A model trained on shuffled labels is not proposed against the champion, and nothing is registered for it.
    served = served_model(root)
    write_params(root, {**TINY, "train": {**TINY["train"], "shuffle_labels": True}})
    run_dvc(root, "repro")
    proposal = json.loads((root / "reports" / "proposal.json").read_text())
    assert proposal["promote"] is False, proposal
    assert proposal["champion_version"] == "1"
    assert registry(root) == {"1": "challenger,champion"} and served_model(root) == served
    champion = json.loads((root / "reports" / "champion_metrics.json").read_text())
    assert champion["macro_f1"] > proposal["challenger_macro_f1"]

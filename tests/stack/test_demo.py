"""`pzone demo`: the sizing and the table (pure), and one real quick run of two rounds as a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from pzone_stack.demo import RoundResult, demo_params, make_plan, results_table
from tests.support.paths import REPO
from tests.support.services import free_port


@pytest.mark.unit
def test_plan_sizes_round_one_to_train_and_quick_is_smaller() -> None:
    full = make_plan(rounds=3, photos_per_round=None, devices=16, epochs=None, quick=False)
    quick = make_plan(rounds=2, photos_per_round=None, devices=16, epochs=None, quick=True)
    assert full.first_round_photos >= full.photos_per_round and quick.first_round_photos >= 100
    assert quick.epochs < full.epochs and quick.first_round_photos < full.first_round_photos
    assert (
        make_plan(rounds=1, photos_per_round=500, devices=4, epochs=3, quick=True).first_round_photos == 500
    )
    params = demo_params(quick)
    assert params["train"]["epochs"] == quick.epochs and params["prepare"]["image_size"] == quick.image_size
    assert params["labels"]["window_s"] < 30  # the fleet moves every few tens of seconds


@pytest.mark.unit
def test_results_table_shows_every_round() -> None:
    rows = [
        RoundResult(
            1, photos=150, labeled=120, test_macro_f1=0.61, outcome="promoted", serving="pzone-tilt/1"
        ),
        RoundResult(
            2,
            photos=80,
            labeled=190,
            test_macro_f1=0.58,
            outcome="kept",
            serving="pzone-tilt/1",
            live_version="pzone-tilt/1",
            live_accuracy=0.7,
            live_scored=60,
        ),
    ]
    console = Console(width=200, record=True)
    console.print(results_table(rows))
    text = console.export_text()
    assert "no model yet" in text and "0.700 of 60 (pzone-tilt/1)" in text and "kept" in text


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_quick_demo_of_two_rounds_trains_serves_and_measures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PZONE_", "MLFLOW_", "BENTOML_"))}
    env.update(PZONE_DATA_DIR=str(tmp_path / "data"), COLUMNS="220", PYTHONUNBUFFERED="1")
    ports = [str(free_port()) for _ in range(3)]
    options = ["--quick", "--rounds", "2", "--api-port", ports[0], "--model-port", ports[1]]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pzone.cli",
            "--log-level",
            "WARNING",
            "demo",
            *options,
            "--broker-port",
            ports[2],
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = done.stdout
    assert done.returncode == 0, out[-5000:] + done.stderr[-5000:]
    rows = {
        int(m.group(1)): [cell.strip() for cell in m.group(2).split("│")]
        for m in re.finditer(r"^│\s+(\d+) │(.*)│$", out, re.MULTILINE)
    }
    assert sorted(rows) == [1, 2], out[-3000:]
    photos, labeled, f1, outcome, serving, live = rows[1]
    assert int(photos) >= 100 and int(labeled) > 0 and float(f1) >= 0
    assert outcome == "promoted" and serving == "pzone-tilt/1"  # round 1 trains the first model and serves it
    assert "no model yet" in live
    photos, labeled, f1, outcome, serving, live = rows[2]
    assert outcome in ("promoted", "kept") and serving.startswith("pzone-tilt/")
    # the model of round 1 answered round 2's photos, and the sensors scored it
    assert re.fullmatch(r"[01]\.\d{3} of \d+ \(pzone-tilt/1\)", live), live
    assert f"http://127.0.0.1:{ports[0]}/" in out and "mlflow ui --backend-store-uri" in out
    # everything was stopped: nothing listens any more
    import socket

    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(port))) != 0
    check_table_against_database(tmp_path / "data", rows)


def check_table_against_database(data_dir: Path, rows: dict[int, list[str]]) -> None:
    """The final table's numbers agree with what the demo's platform stored."""
    import json

    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from pzone.db.engine import make_engine
    from pzone.db.models import Photo, Prediction
    from pzone.labels import labeled_photos

    engine = make_engine(f"sqlite:///{data_dir / 'demo' / 'pzone.db'}")
    try:
        with Session(engine) as session:
            stored = session.scalar(select(func.count()).select_from(Photo).where(Photo.status == "stored"))
            labeled = labeled_photos(session)
            by_v1 = session.scalar(
                select(func.count()).select_from(Prediction).where(Prediction.model_version == "pzone-tilt/1")
            )
    finally:
        engine.dispose()
    assert stored == sum(int(row[0]) for row in rows.values())  # every photo of the table is stored
    snapshot = data_dir / "demo-project" / "data" / "snapshot"
    skipped = json.loads((snapshot / "skipped.json").read_text())
    in_snapshot = int(
        rows[2][1]
    )  # round 2's training snapshot: every labeled photo, used or skipped with a reason
    assert len(labeled) == in_snapshot + sum(len(s["photo_ids"]) for s in skipped)
    scored = int(re.search(r"of (\d+)", rows[2][5]).group(1))  # type: ignore[union-attr]
    assert by_v1 is not None and by_v1 >= scored  # the live figure counts predictions stored by that model

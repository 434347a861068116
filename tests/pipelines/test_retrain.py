"""`pzone retrain`: the --auto decision, the lock (one retrain at a time, per machine and per database), and a real
retrain on a temp project that promotes, then finds nothing new, then keeps a worse challenger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pzone_pipelines.retrain import (
    EXIT_BUSY,
    EXIT_ROLLOUT_TIMEOUT,
    RetrainBusy,
    RetrainSettings,
    exclusive,
    expected_version,
    failed_stage,
    served_version,
    serving_workers,
    should_retrain,
    wait_for_version,
)
from tests.support.repro import make_project, populate_platform, project_env, write_params
from tests.support.tiny_model import TierProcess

SETTINGS = RetrainSettings(retrain_min_new_labeled=100, retrain_min_live_accuracy=0.8)


# --- the decision -----------------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("new", "accuracy", "go", "words"),
    [
        (100, None, True, "100 new labeled photos"),  # enough new photos, no model yet
        (250, 0.95, True, "250 new labeled photos"),  # enough new photos, whatever the accuracy
        (99, None, False, "not measured yet"),
        (99, 0.9, False, "threshold 100"),
        (5, 0.7, True, "live accuracy 0.700 below 0.800"),  # accuracy fell and there is something to learn
        (0, 0.7, False, "no new labeled photo"),  # fell, but the pipeline would have nothing new
        (5, 0.8, False, "0.800 (bar 0.800)"),  # at the bar is not below it
        (0, None, False, "0 new labeled photos"),
    ],
)
def test_should_retrain(new: int, accuracy: float | None, go: bool, words: str) -> None:
    decided, reason = should_retrain(new, accuracy, SETTINGS)
    assert decided is go
    assert words in reason


@pytest.mark.unit
def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PZONE_RETRAIN_MIN_NEW_LABELED", "7")
    monkeypatch.setenv("PZONE_RETRAIN_MIN_LIVE_ACCURACY", "0.55")
    settings = RetrainSettings()
    assert (settings.retrain_min_new_labeled, settings.retrain_min_live_accuracy) == (7, 0.55)
    assert should_retrain(7, None, settings)[0] and should_retrain(1, 0.5, settings)[0]


@pytest.mark.unit
def test_failed_stage_and_expected_version() -> None:
    lines = ["Running stage 'snapshot':", "Running stage 'prepare':", "prepare failed: no training examples"]
    assert failed_stage(lines) == "prepare"
    assert failed_stage([*lines, "ERROR: failed to reproduce 'prepare': failed to run"]) == "prepare"
    assert failed_stage([]) is None
    package = {"model_tag": "pzone-tilt:abc123", "labels": {"mlflow_version": "4"}}
    assert expected_version(package) == "pzone-tilt/4"
    assert expected_version({}) is None


# --- the lock ---------------------------------------------------------------------------------------------------


def pzone_retrain(
    project: Path, env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pzone.cli", "retrain", "--project", str(project), *args],
        env={**env, "COLUMNS": "200"},
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.unit
def test_lock_file_excludes_a_second_holder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pzone.db'}"
    with (
        exclusive(tmp_path, url),
        pytest.raises(RetrainBusy, match="on this machine"),
        exclusive(tmp_path, url),
    ):
        pass
    with exclusive(tmp_path, url):  # released: free again
        pass


@pytest.mark.integration
def test_second_retrain_is_refused_on_sqlite(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    env = project_env(root)
    with exclusive(root / ".pzone", f"sqlite:///{root / '.pzone' / 'pzone.db'}"):
        done = pzone_retrain(root, env, timeout=120)
    assert done.returncode == EXIT_BUSY, done.stdout + done.stderr
    assert "retrain refused" in done.stdout and "another retrain is running on this machine" in done.stdout
    assert not (root / "dvc.lock").exists()  # the pipeline never started


@pytest.mark.integration
def test_second_retrain_is_refused_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """Two machines sharing one database: different data dirs (no common lock file), one advisory lock."""
    root = make_project(tmp_path / "p")
    env = {**project_env(root), "PZONE_DATABASE_URL": pg_url}
    with exclusive(tmp_path / "other-machine", pg_url):
        done = pzone_retrain(root, env, timeout=120)
        with pytest.raises(RetrainBusy, match="advisory lock"), exclusive(tmp_path / "third", pg_url):
            pass
    assert done.returncode == EXIT_BUSY, done.stdout + done.stderr
    assert "against this database" in done.stdout
    with exclusive(tmp_path / "third", pg_url):  # released with its connection
        pass


# --- a real retrain ---------------------------------------------------------------------------------------------

TINY = {
    "prepare": {"image_size": 48, "val_fraction": 0.15, "test_fraction": 0.2},
    "train": {"epochs": 6, "batch_size": 32},
    "register": {"margin": 0.02, "min_macro_f1": 0.0},
}


@pytest.mark.e2e
@pytest.mark.slow
def test_retrain_promotes_then_skips_then_keeps_and_auto_decides(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", TINY)
    populate_platform(root, 150, seed=5)
    env = project_env(root)

    # --auto with no training yet: all 150 labeled photos are new, above the threshold.
    first = pzone_retrain(root, {**env, "PZONE_RETRAIN_MIN_NEW_LABELED": "100"}, "--auto")
    out = first.stdout
    assert first.returncode == 0, out + first.stderr
    assert "retraining: 150 new labeled photos" in out
    assert "Running stage 'train'" in out  # the pipeline's output is streamed
    assert "promoted pzone-tilt/1" in out and "no PZONE_MODEL_TIER_URL" in out
    assert json.loads((root / "reports" / "decision.json").read_text())["promote"] is True

    # --auto again: nothing new, no retrain; a plain retrain: every stage skipped.
    auto = pzone_retrain(root, env, "--auto")
    assert auto.returncode == 0 and "not retraining: 0 new labeled photos" in auto.stdout, auto.stdout
    again = pzone_retrain(root, env)
    assert again.returncode == 0 and "nothing new" in again.stdout, again.stdout

    # A challenger that cannot pass the gate (a margin no model can clear: the tiny models here are too close to
    # chance for a shuffled-label control to lose reliably; tests/training/test_promote.py has that one) is kept out.
    write_params(root, {**TINY, "register": {**TINY["register"], "margin": 0.99}})
    kept = pzone_retrain(root, env)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "kept:" in kept.stdout and "the champion stays pzone-tilt/1" in kept.stdout
    assert json.loads((root / "reports" / "decision.json").read_text())["promote"] is False


@pytest.mark.e2e
@pytest.mark.slow
def test_retrain_reports_the_failing_stage(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", TINY)
    populate_platform(root, 0, seed=1)
    done = pzone_retrain(root, project_env(root))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "retrain failed in stage snapshot" in done.stdout and "no labeled photos" in done.stdout


def live_scored(root: Path, version: str) -> tuple[int, int]:
    """(scored, pending_label) of ``version``'s predictions on the project's platform."""
    from sqlalchemy.orm import Session

    from pzone.accuracy import live_accuracy
    from pzone.db.engine import make_engine

    engine = make_engine(f"sqlite:///{root / '.pzone' / 'pzone.db'}")
    try:
        with Session(engine) as session:
            report = live_accuracy(session, model_version=version)
    finally:
        engine.dispose()
    found = [v for v in report["versions"] if v["model_version"] == version]
    return (found[0]["scored"], found[0]["pending_label"]) if found else (0, 0)


@pytest.mark.e2e
def test_retrain_refreshes_the_platforms_labels_before_the_pipeline(tmp_path: Path) -> None:
    """The snapshot stage only reads; retrain stores the sensor labels (the project's params) before `dvc repro`,
    even when a stage then fails, so live accuracy scores the served model's verdicts."""
    from sqlalchemy.orm import Session

    from pzone.db.engine import make_engine
    from pzone.db.models import Prediction

    broken = {
        **TINY,
        "prepare": {**TINY["prepare"], "image_size": 8},
    }  # prepare refuses it, after the snapshot
    root = make_project(tmp_path / "p", broken)
    seeded = populate_platform(root, 20, seed=2)
    engine = make_engine(f"sqlite:///{root / '.pzone' / 'pzone.db'}")
    with Session(engine) as session:
        session.add_all(
            Prediction(photo_id=photo.photo_id, model_version="pzone-tilt/1", label=photo.state)
            for photo in seeded.photos[:5]
        )
        session.commit()
    engine.dispose()
    assert live_scored(root, "pzone-tilt/1") == (0, 5)  # no label stored yet

    done = pzone_retrain(root, project_env(root))
    out = done.stdout
    assert done.returncode == 1 and "retrain failed in stage prepare" in out, out + done.stderr
    assert out.index("labels refreshed: 20 of 20 stored photos") < out.index("Running stage 'snapshot'"), out
    assert live_scored(root, "pzone-tilt/1") == (5, 0)


@pytest.mark.unit
def test_retrain_outside_a_project_exits_2(tmp_path: Path) -> None:
    done = pzone_retrain(tmp_path, {**os.environ, "PZONE_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2 and "no dvc.yaml" in done.stdout


def withdraw_champion(root: Path) -> None:
    """What an operator does to take a champion back: remove the registry's ``champion`` alias (the next trained
    model then has no champion to beat)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / '.pzone' / 'mlflow.db'}")
    client.delete_registered_model_alias("pzone-tilt", "champion")


@pytest.mark.e2e
@pytest.mark.slow
def test_retrain_waits_until_a_live_model_tier_serves_the_new_champion(tmp_path: Path) -> None:
    """With the tier away, the promotion stands and retrain says that nothing serves it (exit 4); a real
    ``bentoml serve`` on the project's model store with its watcher on then serves that champion, and the next
    retrain promotes, sees the tier swap the new champion in on every worker, and exits 0."""
    root = make_project(tmp_path / "p", TINY)
    populate_platform(root, 120, seed=11)
    tier = TierProcess(root / ".pzone" / "bentoml", tmp_path / "tier.log")
    tier.env["PZONE_MODEL_WATCH_INTERVAL_S"] = "0.5"
    tier.env["PZONE_MODEL_WORKERS"] = "2"  # each worker swaps on its own: retrain waits for both
    waiting = {**project_env(root), "PZONE_MODEL_TIER_URL": tier.url, "PZONE_RETRAIN_ROLLOUT_TIMEOUT_S": "2"}
    first = pzone_retrain(root, waiting)  # nothing listens at the tier's address yet
    assert first.returncode == EXIT_ROLLOUT_TIMEOUT, first.stdout + first.stderr
    assert "promoted pzone-tilt/1" in first.stdout and "still answers with nothing" in first.stdout

    tier.start(timeout=120)
    try:
        assert served_version(tier.url) == "pzone-tilt/1"  # the promotion stood
        withdraw_champion(root)
        write_params(root, {**TINY, "train": {**TINY["train"], "epochs": 5}})
        second = pzone_retrain(root, {**waiting, "PZONE_RETRAIN_ROLLOUT_TIMEOUT_S": "60"})
        out = second.stdout
        assert second.returncode == 0, out + second.stderr + tier.tail()
        assert "promoted pzone-tilt/2" in out
        assert f"the model tier at {tier.url} now serves pzone-tilt/2" in out
        assert served_version(tier.url) == "pzone-tilt/2"
        assert serving_workers(tier.url) == {"pzone-tilt/1": 0.0, "pzone-tilt/2": 2.0}
    finally:
        tier.stop()


class MetricsServer:
    """A stand-in tier that answers ``GET /metrics`` with whatever the test sets (and 404 to anything else)."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.body = ""
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = outer.body.encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.unit
def test_rollout_is_done_only_when_every_worker_serves_the_new_version() -> None:
    tier = MetricsServer()
    try:
        tier.body = "# HELP pzone_model_serving x\n# TYPE pzone_model_serving gauge\n"
        assert serving_workers(tier.url) is None  # no samples: an older tier, or none loaded
        tier.body += (
            'pzone_model_serving{model_version="pzone-tilt/1"} 1.0\n'
            'pzone_model_serving{model_version="pzone-tilt/2"} 1.0\n'
            'pzone_model_predictions_total{label="upright",model_version="pzone-tilt/9"} 4.0\n'
        )
        assert serving_workers(tier.url) == {"pzone-tilt/1": 1.0, "pzone-tilt/2": 1.0}
        # one worker swapped, the other not yet: not done, and it says which version still answers
        assert wait_for_version(tier.url, "pzone-tilt/2", 0.3, interval_s=0.1) == "pzone-tilt/1"
        tier.body = tier.body.replace('"pzone-tilt/1"} 1.0', '"pzone-tilt/1"} 0.0').replace(
            '"pzone-tilt/2"} 1.0', '"pzone-tilt/2"} 2.0'
        )
        assert wait_for_version(tier.url, "pzone-tilt/2", 5, interval_s=0.1) == "pzone-tilt/2"
        assert wait_for_version(tier.url, "pzone-tilt/3", 0.2, interval_s=0.1) == "pzone-tilt/2"
    finally:
        tier.close()
    assert serving_workers(tier.url, timeout_s=1) is None  # nothing listens any more


@pytest.mark.unit
def test_a_relative_data_dir_means_the_projects(tmp_path: Path) -> None:
    from pzone_pipelines.retrain.settings import RetrainSettings

    relative = RetrainSettings(data_dir=Path(".pzone")).in_project(tmp_path)
    assert isinstance(relative, RetrainSettings) and relative.data_dir == tmp_path / ".pzone"
    absolute = RetrainSettings(data_dir=tmp_path / "elsewhere")
    assert absolute.in_project(tmp_path / "p").data_dir == tmp_path / "elsewhere"

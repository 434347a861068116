"""Every model's dataset is recoverable: the parts of `pzone dataset pull`, the push of a run's data from the DVC
cache, and `pzone compare`'s table. Bad input is a sentence (exit 2); a lost object is named (exit 1). The whole loop
(promote → S3 → a clone with nothing but the code and MLflow → pull → `dvc repro` → the recorded metrics → compare)
runs in tests/training/test_promote.py, on the clone that test trains anyway."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from pzone.errors import UserError
from pzone_pipelines.compare import metric_rows, read_confusion, table_lines
from pzone_pipelines.dataset_pull import MissingData, command, model_ref, pull_data
from pzone_pipelines.dvc_remote import (
    DvcRemoteError,
    config_text,
    configure_remote,
    data_lock,
    data_outs,
    missing_objects,
    object_path,
    push_run_dataset,
    settings_remote,
)
from pzone_pipelines.settings import Settings
from tests.support.dataset import remote_key
from tests.support.lineage import LineageWorld
from tests.support.s3 import MotoServer, bucket_keys

LOCK = """
schema: '2.0'
stages:
  snapshot:
    cmd: python -m pzone_pipelines.snapshot
    outs:
    - path: data/snapshot
      hash: md5
      md5: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.dir
      size: 10
      nfiles: 2
  prepare:
    cmd: python -m pzone_pipelines.prepare
    deps:
    - path: data/snapshot
      hash: md5
      md5: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.dir
    outs:
    - path: data/prepared
      hash: md5
      md5: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.dir
      size: 5
      nfiles: 1
    - path: data/test_members.json
      hash: md5
      md5: cccccccccccccccccccccccccccccccc
      size: 3
  train:
    cmd: python -m pzone_training.train
    outs:
    - path: models/model.pt
      hash: md5
      md5: dddddddddddddddddddddddddddddddd
      size: 7
"""


# --- the pure parts -----------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_the_data_outs_of_a_recorded_lock_are_the_snapshot_and_prepare_stages() -> None:
    outs = data_outs(LOCK)
    assert [(o.stage, o.path, o.is_dir) for o in outs] == [
        ("snapshot", "data/snapshot", True),
        ("prepare", "data/prepared", True),
        ("prepare", "data/test_members.json", False),
    ]
    assert outs[0].fields == {"hash": "md5", "md5": "a" * 32 + ".dir", "size": 10, "nfiles": 2}
    assert list(yaml.safe_load(data_lock(LOCK))["stages"]) == [
        "snapshot",
        "prepare",
    ]  # train: a previous run's
    with pytest.raises(DvcRemoteError, match="has no 'snapshot' stage: it records no dataset"):
        data_outs("schema: '2.0'\nstages: {}\n")
    with pytest.raises(DvcRemoteError, match="not YAML"):
        data_outs("stages: [")


@pytest.mark.unit
def test_missing_objects_are_named_by_their_paths(tmp_path: Path) -> None:
    def put(md5: str, content: str) -> None:
        object_path(tmp_path, md5).parent.mkdir(parents=True, exist_ok=True)
        object_path(tmp_path, md5).write_text(content)

    listing = [{"md5": "1" * 32, "relpath": "images/a.jpg"}, {"md5": "2" * 32, "relpath": "manifest.json"}]
    put("a" * 32 + ".dir", json.dumps(listing))
    put("1" * 32, "a")
    put("c" * 32, "[]")
    outs = data_outs(LOCK)
    assert missing_objects(tmp_path, outs) == ["data/snapshot/manifest.json", "data/prepared/"]
    put("2" * 32, "{}")
    put("b" * 32 + ".dir", "[]")
    assert missing_objects(tmp_path, outs) == []


@pytest.mark.unit
def test_the_throwaway_projects_config_keeps_values_whole() -> None:
    from configobj import ConfigObj  # DVC's own config parser

    options = {"url": "s3://bucket/dvc, with # odd", "endpointurl": "http://127.0.0.1:9000"}
    parsed = ConfigObj(config_text(Path("/cache, dir#1"), options).splitlines())
    assert parsed["cache"]["dir"] == "/cache, dir#1"
    assert parsed['remote "platform"'] == options
    assert parsed["core"]["remote"] == "platform"


@pytest.mark.unit
def test_the_remote_comes_from_the_settings(tmp_path: Path) -> None:
    s3 = Settings(dvc_remote_url="s3://photos/dvc", s3_endpoint_url="http://minio:9000")
    assert settings_remote(tmp_path, s3) == {"url": "s3://photos/dvc", "endpointurl": "http://minio:9000"}
    assert settings_remote(tmp_path, Settings(dvc_remote_url="s3://photos/dvc")) == {"url": "s3://photos/dvc"}
    local = settings_remote(tmp_path, Settings(dvc_remote_url="remote"))
    assert local == {"url": str((tmp_path / "remote").resolve())}  # the project's folder, as for the stages
    assert settings_remote(tmp_path, Settings(dvc_remote_url=None)) is None


@pytest.mark.unit
@pytest.mark.parametrize(
    ("model", "version", "run", "said"),
    [
        (None, None, None, "name the model: --model REF"),
        ("pzone-tilt@champion", None, "0" * 32, "name one model, not several"),
        (None, "v3", None, "--version takes a version number, not 'v3'"),
        ("pzone-tilt@champion", "3", None, "with --version, --model takes a model name"),
        ("pzone tilt", None, None, "is not a model reference"),
    ],
)
def test_the_options_name_one_model(
    model: str | None, version: str | None, run: str | None, said: str
) -> None:
    with pytest.raises(UserError, match=said):
        model_ref("pzone-tilt", model, version, run)


@pytest.mark.unit
def test_the_options_that_name_a_model() -> None:
    assert model_ref("pzone-tilt", "pzone-tilt@champion", None, None).alias == "champion"
    assert model_ref("pzone-tilt", None, "3", None).text == "pzone-tilt/3"
    assert model_ref("pzone-tilt", "other", "3", None).name == "other"
    assert model_ref("pzone-tilt", None, None, "abc").run_id == "abc"


@pytest.mark.unit
def test_the_comparison_table_has_deltas_per_class_and_n() -> None:
    recorded = {
        "accuracy": 0.5,
        "macro_f1": 0.4,
        "per_class": {"upright": {"f1": 0.5}, "tilted": {"f1": 0.25}, "fallen": {"f1": 0.45}},
        "n_test": 20,
    }
    workspace = {**recorded, "accuracy": 0.75, "per_class": {**recorded["per_class"], "fallen": {"f1": 0.5}}}
    lines = table_lines(metric_rows(recorded, workspace), "pzone-tilt/2")
    assert lines[0] == ["metric", "pzone-tilt/2", "workspace", "Δ"]
    assert lines[1] == ["accuracy", "0.5000", "0.7500", "+0.2500"]
    assert [line[0] for line in lines[1:]] == [
        "accuracy",
        "macro-F1",
        "F1 upright",
        "F1 tilted",
        "F1 fallen",
        "n (test)",
    ]
    assert lines[5] == ["F1 fallen", "0.4500", "0.5000", "+0.0500"]
    assert lines[6] == ["n (test)", "20", "20", "+0"]
    no_metrics = table_lines(metric_rows({}, workspace), "v1")
    assert no_metrics[1] == ["accuracy", "—", "0.7500", "—"]


@pytest.mark.unit
def test_a_confusion_csv_becomes_counts(tmp_path: Path) -> None:
    path = tmp_path / "confusion.csv"
    path.write_text("actual,predicted\nupright,upright\ntilted,fallen\ntilted,fallen\nfallen,fallen\n")
    assert read_confusion(path).tolist() == np.array([[1, 0, 0], [0, 0, 2], [0, 0, 1]]).tolist()


BUCKET = "pzone-photos"


# --- the push, from a run that is no longer the workspace's -------------------------------------------------------

STAGES = {
    "stages": {
        "snapshot": {
            "cmd": "python -c \"import shutil; shutil.copytree('src', 'data/snapshot', dirs_exist_ok=True)\"",
            "deps": ["src"],
            "outs": ["data/snapshot"],
        },
        "prepare": {
            "cmd": "python -c \"import pathlib, shutil; shutil.copytree('data/snapshot', 'data/prepared', "
            "dirs_exist_ok=True); pathlib.Path('data/prepared/ids.json').write_text('[1]')\"",
            "deps": ["data/snapshot"],
            "outs": ["data/prepared"],
        },
    }
}


def dvc(root: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.integration
def test_an_earlier_runs_data_goes_to_s3_from_the_cache_and_lost_objects_are_named(
    tmp_path: Path, s3_server: MotoServer
) -> None:
    """As for a `dvc exp run` that is not the workspace's any more: its objects go from the cache to the bucket, the
    workspace holding other data. An object the bucket lost is named by `dataset pull`, one the cache lost by the
    push."""
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url)
    s3.create_bucket(Bucket=BUCKET)
    settings = Settings(dvc_remote_url=f"s3://{BUCKET}/dvc", s3_endpoint_url=s3_server.endpoint_url)
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    dvc(project, "init", "--no-scm", "-q")
    (project / "dvc.yaml").write_text(yaml.safe_dump(STAGES))
    (project / "src" / "photo.jpg").write_text("the first dataset\n")
    dvc(project, "repro", "-q")
    earlier = (project / "dvc.lock").read_text()
    (project / "src" / "photo.jpg").write_text("the second dataset\n")
    dvc(project, "repro", "-q")

    pushed = push_run_dataset(project, earlier, settings)
    assert pushed.remote == f"s3://{BUCKET}/dvc" and pushed.outs == ("data/snapshot", "data/prepared")
    keys = bucket_keys(s3_server, BUCKET, "dvc/")
    first, second = (
        remote_key(hashlib.md5(text).hexdigest())
        for text in (b"the first dataset\n", b"the second dataset\n")
    )
    assert first in keys and second not in keys
    assert {remote_key(out.md5) for out in data_outs(earlier)} <= keys  # the directory listings too

    s3.delete_object(Bucket=BUCKET, Key=first)
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / "data")
    (project / "dvc.lock").write_text(earlier)
    assert configure_remote(project, settings) == f"s3://{BUCKET}/dvc"
    lost = "data/snapshot/photo.jpg, data/prepared/photo.jpg"
    with pytest.raises(
        MissingData, match=re.escape(f"the DVC remote lacks 2 file(s) of the recorded dataset: {lost}")
    ):
        pull_data(project, earlier)
    with pytest.raises(DvcRemoteError, match=re.escape(f"lacks 2 file(s) of the run's dataset ({lost})")):
        push_run_dataset(project, earlier, settings)


# --- bad input: sentences, exit 2, nothing written ----------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--model", "nope@champion"], "there is no registered model 'nope' (registered: pzone-tilt)"),
        (
            ["--model", "pzone-tilt@champoin"],
            "pzone-tilt has no alias 'champoin' (its aliases: challenger, champion)",
        ),
        (["--version", "9"], "pzone-tilt has no version 9 (its versions: 1, 2, 3)"),
        (["--run", "0" * 32], f"there is no MLflow run {'0' * 32} in the tracking store"),
        (["--version", "3"], "pzone-tilt/3 (@challenger) recorded no dataset (no lineage/dvc.lock"),
        (["--model", "pzone-tilt@champion"], "the recorded dvc.lock has no 'snapshot' stage"),
    ],
)
def test_pull_of_an_unknown_model_or_one_without_a_dataset_says_which(
    args: list[str], said: str, lineage_world: LineageWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("PZONE_DATA_DIR", str(lineage_world.data_dir))
    monkeypatch.setenv("COLUMNS", "400")
    app = typer.Typer()
    app.command()(command)
    result = CliRunner().invoke(app, [*args, "--project", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "error: " in result.output and said in " ".join(result.output.split()), result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvc.yaml"]  # nothing written

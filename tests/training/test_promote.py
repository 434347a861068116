"""The data scientist's loop, end to end, in one fresh clone on the seeded platform: `dvc repro` and `dvc exp run`
train, evaluate and propose, and never move the registry's aliases or the store the model tier serves from;
`pzone promote` takes a run through the gate, on the frozen test split, and is the only way in. A promotion pushes the
run's dataset to the DVC remote (moto's S3 over HTTP): a second clone with nothing but the code and the MLflow store
pulls the champion's dataset, retrains to its recorded test metrics and compares. Bad params fail in their own stage,
bad input to `pzone promote` is a sentence; neither moves anything."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest
import typer
from typer.testing import CliRunner

from pzone.tier_contract import IMAGE_SIZE_MAX, IMAGE_SIZE_MIN
from pzone_pipelines.register import REFUSED_EXIT_CODE, GateParams
from pzone_training.promote import Candidate, PromoteError, check_servable, command, judge
from tests.support.dataset import (
    QUICK_PARAMS,
    SeededPlatform,
    clean_env,
    dataset_keys,
    fresh_clone,
    in_clone,
    recorded_metrics,
)
from tests.support.repro import populate_platform, registry, served_model, write_params
from tests.support.s3 import MotoServer, bucket_keys

# The seeded platform's photos are too few to learn the tilt from (a shuffled-label control scores as well), so the
# clone's platform gets 300 more rendered photos with their readings. On those, 2 epochs at 64 px train a model that
# has learnt next to nothing (macro-F1 ~0.14-0.26, shuffled labels alike), 25 epochs one that has (~0.57-0.93 over
# seeds): the first champion, the better experiment, and the worse one (the negative control) once the better is
# champion. Every knob an experiment changes is set each time: the workspace keeps the previous experiment's params.
PARAMS = {**QUICK_PARAMS, "prepare": {**QUICK_PARAMS["prepare"], "image_size": 64}, "train": {"epochs": 2}}
BETTER = ("-S", "train.epochs=25", "-S", "train.shuffle_labels=false")
WORSE = ("-S", "train.epochs=2", "-S", "train.shuffle_labels=true")
# An unknown arch fails in the same stage as zero epochs (tests/training/test_training.py checks each train param).
BAD_PARAMS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("-S", "train.epochs=0"), "train", "error: train.epochs and batch_size must be ≥ 1"),
    (
        ("-S", "train.epochs=2", "-S", f"prepare.image_size={IMAGE_SIZE_MAX + 1}"),
        "prepare",
        "error: prepare.image_size must be between",
    ),
)
BUCKET = "pzone-photos"
CHAMPION = "pzone-tilt@champion"


def read(root: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((root / name).read_text()))


def run_tags(root: Path, run_id: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / '.pzone' / 'mlflow.db'}")
    return dict(client.get_run(run_id).data.tags)


def output(done: Any) -> str:
    return str(done.stdout) + str(done.stderr)


def loop_env(root: Path, s3: MotoServer) -> dict[str, str]:
    """A data scientist's shell in the clone ``root``, with the platform's DVC remote on S3."""
    return clean_env(
        BENTOML_HOME=str(root / ".pzone" / "bentoml"),
        PZONE_DVC_REMOTE_URL=f"s3://{BUCKET}/dvc",
        PZONE_S3_ENDPOINT_URL=s3.endpoint_url,
    )


def run_ok(root: Path, env: dict[str, str], *args: str) -> Any:
    done = in_clone(root, *args, env=env)
    assert done.returncode == 0, f"{' '.join(args)}:\n{output(done)[-4000:]}"
    return done


def experiment(root: Path, env: dict[str, str], name: str, params: tuple[str, ...]) -> dict[str, Any]:
    """`dvc exp run -n NAME PARAMS` in the clone; its proposal."""
    run_ok(root, env, "dvc", "exp", "run", "-n", name, *params)
    proposal = read(root, "reports/proposal.json")
    assert proposal["run_id"] == read(root, "models/run.json")["run_id"]
    return proposal


def promote_here(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    """`pzone promote ARGS` in this process (the same command as the CLI's), on the clone's platform."""
    monkeypatch.setenv("PZONE_DATA_DIR", str(root / ".pzone"))
    monkeypatch.setenv("COLUMNS", "400")
    app = typer.Typer()
    app.command()(command)
    return CliRunner().invoke(app, list(args))


def the_dataset_comes_back(target: Path, trained: Path, s3: MotoServer, run_id: str) -> None:
    """A clone with nothing but the code and a copy of the MLflow store (no platform, no DVC cache, no data):
    `pzone dataset pull` of the champion, `dvc repro` with the snapshot frozen, the recorded metrics, compare."""
    clone = fresh_clone(target)
    (clone / ".pzone").mkdir()
    shutil.copy2(trained / ".pzone" / "mlflow.db", clone / ".pzone" / "mlflow.db")
    (clone / "params.yaml").write_text("base: {seed: 1}\n")  # whatever the workspace holds: pull replaces it
    env = loop_env(clone, s3)

    pulled = run_ok(clone, env, "pzone.cli", "dataset", "pull", "--model", CHAMPION)
    assert f"pzone-tilt/1 (@challenger, @champion): MLflow run {run_id}" in pulled.stdout, pulled.stdout
    assert "froze the snapshot stage" in pulled.stdout
    assert (clone / "params.yaml").read_text() == (trained / "params.yaml").read_text()  # the recorded params

    repro = run_ok(clone, env, "dvc", "repro")
    assert "Stage 'prepare' didn't change, skipping" in repro.stdout, repro.stdout
    assert not (clone / ".pzone" / "pzone.db").exists()  # the snapshot stage never looked for a platform
    # same data, params and seed: the same numbers on CPU
    assert read(clone, "reports/metrics.json") == recorded_metrics(trained / ".pzone", run_id)

    compared = run_ok(clone, env, "pzone.cli", "compare", "--model", CHAMPION)
    assert "F1 fallen" in compared.stdout and "+0.0000" in compared.stdout, compared.stdout
    assert (clone / "reports" / "compare.png").stat().st_size > 10_000


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_experiments_never_touch_serving_promote_is_the_way_in_and_a_champions_dataset_comes_back(
    tmp_path: Path, seeded_platform: SeededPlatform, s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    boto3.client("s3", endpoint_url=s3_server.endpoint_url).create_bucket(Bucket=BUCKET)
    root = fresh_clone(tmp_path / "clone")
    seeded_platform.copy_to(root / ".pzone")
    populate_platform(root, 300, seed=1, size=(160, 120), derivatives=False, exif=False)
    write_params(root, PARAMS)
    env = loop_env(root, s3_server)

    # `dvc repro` ends in a proposal: nothing registered, nothing in the store.
    run_ok(root, env, "dvc", "repro")
    first = read(root, "reports/proposal.json")
    assert first["promote"] is True and first["reason"] == "first model: clears the minimum bar", first
    assert first["run_id"] == read(root, "models/run.json")["run_id"]
    assert run_tags(root, first["run_id"])["pzone.proposal"] == "true"
    assert registry(root) == {} and served_model(root) is None
    assert not (root / "reports" / "decision.json").exists()
    assert bucket_keys(s3_server, BUCKET) == set()  # a data scientist's repro pushes nothing

    # `pzone promote` (the run in models/run.json): champion, the store's latest, the records retrain reads.
    done = run_ok(root, env, "pzone.cli", "promote")
    assert "pzone-tilt v1 promoted to champion: first model" in " ".join(done.stdout.split())
    assert registry(root) == {"1": "challenger,champion"}
    first_served = served_model(root)
    package = read(root, "reports/package.json")
    assert first_served and package["model_tag"] == f"pzone-tilt:{first_served}"
    assert package["labels"]["mlflow_version"] == "1" and package["champion"]["run_id"] == first["run_id"]
    assert read(root, "reports/decision.json")["version"] == "1"
    # ... and its dataset is on the remote: every photo, split and listing
    expected = dataset_keys(root / ".dvc" / "cache", (root / "dvc.lock").read_text())
    assert len(expected) > 300 and set(expected) <= bucket_keys(s3_server, BUCKET, "dvc/")
    the_dataset_comes_back(tmp_path / "elsewhere", root, s3_server, first["run_id"])

    # An experiment with a better model proposes itself; nothing the tier reads moves.
    better = experiment(root, env, "better", BETTER)
    assert better["promote"] is True and better["champion_version"] == "1", better
    assert registry(root) == {"1": "challenger,champion"} and served_model(root) == first_served

    # `pzone promote --run <better>`: measured again beside the champion on the frozen split, through the gate.
    run_ok(root, env, "pzone.cli", "promote", "--run", better["run_id"])
    assert registry(root) == {"1": "previous-champion", "2": "challenger,champion"}
    decision = read(root, "reports/decision.json")
    # the evaluate stage's numbers, for both models: the same code on the same test split
    assert decision["challenger_macro_f1"] == better["challenger_macro_f1"]
    assert decision["champion_macro_f1"] == first["challenger_macro_f1"]
    assert (decision["run_id"], decision["champion_version"], decision["promote"]) == (
        better["run_id"],
        "1",
        True,
    )
    second_served = served_model(root)
    assert second_served not in (None, first_served)
    assert read(root, "reports/package.json")["labels"]["mlflow_version"] == "2"

    # An experiment with a worse model (shuffled labels) is not proposed; nothing moves either.
    worse = experiment(root, env, "worse", WORSE)
    assert worse["promote"] is False and worse["champion_version"] == "2", worse
    assert registry(root) == {"1": "previous-champion", "2": "challenger,champion"}
    assert served_model(root) == second_served
    shown = run_ok(root, env, "dvc", "exp", "show", "--csv")
    rows = {row["Experiment"]: row for row in csv.DictReader(io.StringIO(shown.stdout))}
    for name, params, proposal in (("better", BETTER, better), ("worse", WORSE, worse)):
        for key, value in (item.split("=") for item in params[1::2]):
            assert rows[name][key].lower() == value, (name, key, rows[name][key])
        assert float(rows[name]["macro_f1"]) == proposal["challenger_macro_f1"]
        assert rows[name]["promote"] == str(proposal["promote"])

    # `pzone promote --run <worse>`: registered as challenger, refused with the reason, exit 3.
    done = in_clone(root, "pzone.cli", "promote", "--run", worse["run_id"], env=env)
    assert done.returncode == REFUSED_EXIT_CODE, output(done)
    assert "pzone-tilt v3 refused: does not beat the champion by the margin" in " ".join(done.stdout.split())
    assert registry(root) == {"1": "previous-champion", "2": "champion", "3": "challenger"}
    assert served_model(root) == second_served
    assert read(root, "reports/decision.json")["promote"] is False
    assert run_tags(root, worse["run_id"])["pzone.promoted"] == "false"

    # Bad input to the promotion: a sentence, exit 2, nothing moved.
    for args, message in (
        (("--run", "0" * 32, "--project", str(root)), f"there is no MLflow run '{'0' * 32}'"),
        (("--version", "9", "--project", str(root)), "pzone-tilt has no version 9"),
        (("--project", str(tmp_path)), "no params.yaml in"),
    ):
        result = promote_here(root, monkeypatch, *args)
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and f"error: {message}" in said and "Traceback" not in said, said
    assert registry(root) == {"1": "previous-champion", "2": "champion", "3": "challenger"}
    assert served_model(root) == second_served

    # Params that break training fail in their own stage, with a sentence; registry and serving stay.
    for params, stage, message in BAD_PARAMS:
        done = in_clone(root, "dvc", "exp", "run", *params, env=env)
        out = output(done)
        assert done.returncode != 0 and f"failed to reproduce '{stage}'" in out and message in out, out[
            -3000:
        ]
        assert "Traceback" not in out
        assert registry(root) == {"1": "previous-champion", "2": "champion", "3": "challenger"}
        assert served_model(root) == second_served
    # The last one left no prepared split: a promotion says so rather than measure on nothing.
    result = promote_here(root, monkeypatch, "--run", better["run_id"], "--project", str(root))
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "error: no prepared test split at" in said, said


@pytest.mark.unit
@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ({"classes": ["upright", "fallen"], "image_size": 48}, "not the model tier's"),
        (
            {"classes": ["upright", "tilted", "fallen"], "image_size": IMAGE_SIZE_MAX + 1},
            "the model tier takes",
        ),
        (
            {"classes": ["upright", "tilted", "fallen"], "image_size": IMAGE_SIZE_MIN - 1},
            "the model tier takes",
        ),
        ({"classes": ["upright", "tilted", "fallen"]}, "None-pixel squares"),
    ],
)
def test_a_model_the_tier_cannot_serve_is_refused_before_anything_moves(
    meta: dict[str, Any], problem: str
) -> None:
    with pytest.raises(PromoteError, match=problem):
        check_servable(meta, "run x")
    check_servable({"classes": ["upright", "tilted", "fallen"], "image_size": IMAGE_SIZE_MIN}, "run x")


@pytest.mark.unit
def test_the_gate_of_the_promotion_is_the_proposals_and_never_promotes_the_champion_over_itself() -> None:
    gate = GateParams(margin=0.02, min_macro_f1=0.5)
    champion = {"exists": True, "comparable": True, "version": "4", "macro_f1": 0.7}
    new_run = Candidate("r1", "models:/m-1", None, "")
    assert judge(new_run, {"macro_f1": 0.9, "n_test": 10}, champion, gate).promote
    assert not judge(new_run, {"macro_f1": 0.71, "n_test": 10}, champion, gate).promote
    the_champion = Candidate("r0", "models:/pzone-tilt/4", "4", "")
    again = judge(the_champion, {"macro_f1": 0.7, "n_test": 10}, champion, gate)
    assert not again.promote and again.reason == "v4 is the champion already"
    other = {**champion, "comparable": False, "classes": ["a", "b"]}
    refused = judge(new_run, {"macro_f1": 0.9, "n_test": 10}, other, gate)
    assert not refused.promote and "another label set" in refused.reason

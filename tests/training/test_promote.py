"""The one promotion path: in a fresh clone on the seeded platform, `dvc repro` and `dvc exp run` train, evaluate and
propose, and never move the registry's aliases or the store the model tier serves from; `pzone promote` takes a
run through the gate, on the frozen test split, and is the only way in. Bad params fail in their own stage, bad
input to `pzone promote` is a sentence; neither moves anything."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from pzone.tier_contract import IMAGE_SIZE_MAX, IMAGE_SIZE_MIN
from pzone_pipelines.register import REFUSED_EXIT_CODE, GateParams
from pzone_training.promote import Candidate, PromoteError, check_servable, judge
from tests.support.dataset import QUICK_PARAMS, SeededPlatform, fresh_clone, in_clone
from tests.support.repro import populate_platform, registry, served_model, write_params

# The seeded platform's photos are too few to learn the tilt from (a shuffled-label control scores as well), so the
# clone's platform gets 300 more rendered photos with their readings. On those, 2 epochs at 64 px train a model that
# has learnt next to nothing (macro-F1 ~0.14-0.26, shuffled labels alike), 25 epochs one that has (~0.57-0.93 over
# seeds): the first champion, the better experiment, and the worse one (the negative control) once the better is
# champion. Every knob an experiment
# changes is set each time: the workspace keeps the previous experiment's params.
PARAMS = {**QUICK_PARAMS, "prepare": {**QUICK_PARAMS["prepare"], "image_size": 64}, "train": {"epochs": 2}}
BETTER = ("-S", "train.epochs=25", "-S", "train.shuffle_labels=false")
WORSE = ("-S", "train.epochs=2", "-S", "train.shuffle_labels=true")
BAD_PARAMS = (
    (("-S", "train.epochs=0"), "train", "error: train.epochs and batch_size must be ≥ 1"),
    (("-S", "train.epochs=2", "-S", "train.arch=vgg99"), "train", "error: train.arch must be one of"),
    (
        ("-S", "train.arch=tiny_cnn", "-S", f"prepare.image_size={IMAGE_SIZE_MAX + 1}"),
        "prepare",
        "error: prepare.image_size must be between",
    ),
)


def read(root: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((root / name).read_text()))


def run_tags(root: Path, run_id: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / '.pzone' / 'mlflow.db'}")
    return dict(client.get_run(run_id).data.tags)


def experiment(root: Path, name: str, params: tuple[str, ...]) -> dict[str, Any]:
    """`dvc exp run -n NAME PARAMS` in the clone; its proposal."""
    done = in_clone(root, "dvc", "exp", "run", "-n", name, *params)
    assert done.returncode == 0, output(done)[-4000:]
    proposal = read(root, "reports/proposal.json")
    assert proposal["run_id"] == read(root, "models/run.json")["run_id"]
    return proposal


def output(done: Any) -> str:
    return str(done.stdout) + str(done.stderr)


@pytest.mark.e2e
@pytest.mark.slow
def test_experiments_never_touch_serving_and_promote_is_the_way_in(
    tmp_path: Path, seeded_platform: SeededPlatform
) -> None:
    root = fresh_clone(tmp_path / "clone")
    seeded_platform.copy_to(root / ".pzone")
    populate_platform(root, 300, seed=1, size=(160, 120), derivatives=False, exif=False)
    write_params(root, PARAMS)

    # `dvc repro` ends in a proposal: nothing registered, nothing in the store.
    done = in_clone(root, "dvc", "repro")
    assert done.returncode == 0, output(done)[-4000:]
    first = read(root, "reports/proposal.json")
    assert first["promote"] is True and first["reason"] == "first model: clears the minimum bar", first
    assert first["run_id"] == read(root, "models/run.json")["run_id"]
    assert run_tags(root, first["run_id"])["pzone.proposal"] == "true"
    assert registry(root) == {} and served_model(root) is None
    assert not (root / "reports" / "decision.json").exists()

    # `pzone promote` (the run in models/run.json): champion, the store's latest, the records retrain reads.
    done = in_clone(root, "pzone.cli", "promote")
    assert done.returncode == 0, output(done)
    assert "pzone-tilt v1 promoted to champion: first model" in " ".join(done.stdout.split())
    assert registry(root) == {"1": "challenger,champion"}
    first_served = served_model(root)
    package = read(root, "reports/package.json")
    assert first_served and package["model_tag"] == f"pzone-tilt:{first_served}"
    assert package["labels"]["mlflow_version"] == "1" and package["champion"]["run_id"] == first["run_id"]
    assert read(root, "reports/decision.json")["version"] == "1"

    # An experiment with a better model proposes itself; nothing the tier reads moves.
    better = experiment(root, "better", BETTER)
    assert better["promote"] is True and better["champion_version"] == "1", better
    assert registry(root) == {"1": "challenger,champion"} and served_model(root) == first_served

    # `pzone promote --run <better>`: measured again beside the champion on the frozen split, through the gate.
    done = in_clone(root, "pzone.cli", "promote", "--run", better["run_id"])
    assert done.returncode == 0, output(done)
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
    worse = experiment(root, "worse", WORSE)
    assert worse["promote"] is False and worse["champion_version"] == "2", worse
    assert registry(root) == {"1": "previous-champion", "2": "challenger,champion"}
    assert served_model(root) == second_served
    shown = in_clone(root, "dvc", "exp", "show", "--csv")
    assert shown.returncode == 0, output(shown)
    rows = {row["Experiment"]: row for row in csv.DictReader(io.StringIO(shown.stdout))}
    for name, params, proposal in (("better", BETTER, better), ("worse", WORSE, worse)):
        for key, value in (item.split("=") for item in params[1::2]):
            assert rows[name][key].lower() == value, (name, key, rows[name][key])
        assert float(rows[name]["macro_f1"]) == proposal["challenger_macro_f1"]
        assert rows[name]["promote"] == str(proposal["promote"])

    # `pzone promote --run <worse>`: registered as challenger, refused with the reason, exit 3.
    done = in_clone(root, "pzone.cli", "promote", "--run", worse["run_id"])
    assert done.returncode == REFUSED_EXIT_CODE, output(done)
    assert "pzone-tilt v3 refused: does not beat the champion by the margin" in " ".join(done.stdout.split())
    assert registry(root) == {"1": "previous-champion", "2": "champion", "3": "challenger"}
    assert served_model(root) == second_served
    assert read(root, "reports/decision.json")["promote"] is False
    assert run_tags(root, worse["run_id"])["pzone.promoted"] == "false"

    # Bad input to the promotion: a sentence, exit 2, nothing moved.
    for args, message in (
        (("--run", "0" * 32), f"there is no MLflow run '{'0' * 32}'"),
        (("--version", "9"), "pzone-tilt has no version 9"),
        (("--project", str(tmp_path)), "no params.yaml in"),
    ):
        done = in_clone(root, "pzone.cli", "promote", *args)
        out = " ".join(output(done).split())
        assert done.returncode == 2 and f"error: {message}" in out and "Traceback" not in out, out
    assert registry(root) == {"1": "previous-champion", "2": "champion", "3": "challenger"}
    assert served_model(root) == second_served

    # Params that break training fail in their own stage, with a sentence; registry and serving stay.
    for params, stage, message in BAD_PARAMS:
        done = in_clone(root, "dvc", "exp", "run", *params)
        out = output(done)
        assert done.returncode != 0 and f"failed to reproduce '{stage}'" in out and message in out, out[
            -3000:
        ]
        assert "Traceback" not in out
        assert registry(root) == {"1": "previous-champion", "2": "champion", "3": "challenger"}
        assert served_model(root) == second_served
    # The last one left no prepared split: a promotion says so rather than measure on nothing.
    done = in_clone(root, "pzone.cli", "promote", "--run", better["run_id"])
    out = " ".join(output(done).split())
    assert done.returncode == 2 and "error: no prepared test split at" in out, out


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

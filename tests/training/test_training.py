"""Training (pzone_training): metrics by hand, params, data, augmentation, models, a tiny real training, the stages.

The slow tests train on rendered photos (pzone_stack.photosim) and run both stages against a throwaway MLflow store.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from pzone.tilt import TILT_CLASSES
from pzone_training.augment import (
    eval_transforms,
    normalize_batch,
    torchvision_train_transforms,
    train_transforms,
)
from pzone_training.data import class_weights, letterbox, load_split, resize_square
from pzone_training.metrics import accuracy, classification_report, confusion_matrix, macro_f1, per_class_prf
from pzone_training.models import build_model, load_checkpoint, predict, save_checkpoint
from pzone_training.params import AugmentParams, TrainParams, coerce_train_params, flatten
from pzone_training.tracking import dataset_hash
from pzone_training.train import make_dataset, make_loader, train_model, write_history

ALL_AUGMENTS = AugmentParams(
    hflip_p=0.5,
    roll_limit_deg=5,
    brightness_contrast_p=1,
    blur_p=1,
    noise_p=1,
    jpeg_p=1,
    scale_limit=0.1,
    shift_limit=0.05,
    coarse_dropout_p=1,
)


def tilt_of(label: int, rng: np.random.Generator) -> float:
    lo, hi = ((0.0, 20.0), (20.0, 60.0), (60.0, 90.0))[label]
    return float(rng.uniform(lo, hi))


def bar_image(tilt_deg: float, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A bright bar standing on the bottom, leaning ``tilt_deg`` from vertical, on a noisy background."""
    image = Image.fromarray(rng.integers(0, 90, (size, size, 3), dtype=np.uint8))
    side = 1 if rng.random() < 0.5 else -1
    x0, y0 = size / 2 + rng.uniform(-4, 4), size - 3
    length = size * 0.7
    x1 = x0 + side * length * math.sin(math.radians(tilt_deg))
    y1 = y0 - length * math.cos(math.radians(tilt_deg))
    ImageDraw.Draw(image).line([(x0, y0), (x1, y1)], fill=(240, 230, 60), width=3)
    return np.asarray(image)


def bar_split(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.resize(np.array([0, 0, 1, 2]), n).astype(np.int64)
    images = [bar_image(tilt_of(int(label), rng), rng, size) for label in labels]
    return (np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)), labels


TINY = {"arch": "tiny_cnn", "epochs": 3, "batch_size": 16, "lr": 3e-3, "num_threads": 2}


# --- metrics, against hand-computed values ----------------------------------------------------------------------
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0])


@pytest.mark.unit
def test_classes_order_is_the_contract() -> None:
    assert TILT_CLASSES == ("upright", "tilted", "fallen")


@pytest.mark.unit
def test_confusion_matrix_by_hand() -> None:
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert confusion_matrix(np.array([], int), np.array([], int), 3).sum() == 0


@pytest.mark.unit
def test_precision_recall_f1_by_hand() -> None:
    precision, recall, f1, support = per_class_prf(confusion_matrix(Y_TRUE, Y_PRED, 3))
    np.testing.assert_allclose(precision, [1 / 2, 2 / 3, 1.0])
    np.testing.assert_allclose(recall, [1 / 2, 1.0, 1 / 2])
    np.testing.assert_allclose(f1, [1 / 2, 0.8, 2 / 3])
    assert support.tolist() == [2, 2, 2]
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    assert macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


@pytest.mark.unit
def test_never_predicted_and_absent_classes_score_zero_not_nan() -> None:
    # class 2 is never predicted (precision undefined) and has no example in the second case
    precision, recall, f1, _ = per_class_prf(confusion_matrix(np.array([0, 1, 2]), np.array([0, 1, 1]), 3))
    assert precision.tolist() == [1.0, 0.5, 0.0] and recall.tolist() == [1.0, 1.0, 0.0]
    assert np.isfinite(f1).all() and f1[2] == 0.0
    assert macro_f1(np.array([0, 0]), np.array([0, 0]), 3) == pytest.approx(1 / 3)


@pytest.mark.unit
def test_classification_report_shape() -> None:
    report = classification_report(Y_TRUE, Y_PRED, TILT_CLASSES)
    assert set(report) == {"accuracy", "macro_f1", "per_class", "n_test"}
    assert report["n_test"] == 6
    assert report["per_class"]["tilted"] == {
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
        "f1": 0.8,
        "support": 2,
    }
    json.dumps(report)  # plain types only


# --- params ------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_params_from_yaml_sections() -> None:
    p = TrainParams.from_params({"base": {"seed": 7}, "train": {"epochs": 3, "augment": {"hflip_p": 0.25}}})
    assert (p.seed, p.epochs, p.augment.hflip_p) == (7, 3, 0.25)
    assert coerce_train_params({"epochs": 2}).epochs == 2
    assert coerce_train_params(p) is p


@pytest.mark.unit
@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"epoch": 3}, "unknown key"),
        ({"augment": {"roll_limit_deg": 30}}, "roll_limit_deg"),
        ({"augment": {"vflip_p": 0.5}}, "unknown key"),
        ({"arch": "vit_h_14"}, "train.arch"),
        ({"augment": {"blur_p": 1.5}}, "probability"),
    ],
)
def test_bad_params_fail_loudly(train: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainParams.from_dict(train)


@pytest.mark.unit
def test_flatten() -> None:
    assert flatten({"train": {"lr": 0.1, "augment": {"hflip_p": 0.5}}, "seed": 1}) == {
        "train.lr": 0.1,
        "train.augment.hflip_p": 0.5,
        "seed": 1,
    }


# --- data ----------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_load_split_round_trip_and_empty(tmp_path: Path) -> None:
    images, labels = bar_split(5, 0)
    for name, (imgs, labs) in {"a": (images, labels), "b": (images[:0], labels[:0])}.items():
        d = tmp_path / name
        d.mkdir()
        np.save(d / "images.npy", imgs)
        np.save(d / "labels.npy", labs)
        (d / "ids.json").write_text(json.dumps([f"id{i}" for i in range(len(labs))]))
    split = load_split(tmp_path / "a")
    assert split.images.shape == (5, 32, 32, 3) and split.labels.dtype == np.int64 and split.ids[0] == "id0"
    images_, labels_, ids_ = load_split(tmp_path / "b")  # a plain (images, labels, ids) tuple too
    assert images_.shape == (0, 32, 32, 3) and len(labels_) == 0 and ids_ == []


@pytest.mark.unit
def test_load_split_rejects_mismatch_and_bad_labels(tmp_path: Path) -> None:
    images, labels = bar_split(4, 0)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels[:3])
    with pytest.raises(ValueError, match="4 images, 3 labels"):
        load_split(tmp_path)
    np.save(tmp_path / "labels.npy", np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="label ids"):
        load_split(tmp_path)


@pytest.mark.unit
def test_letterbox_keeps_aspect_and_pads() -> None:
    photo = Image.new("RGB", (640, 480), (200, 100, 50))
    out = letterbox(photo, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out[:8] == 0).all() and (out[-8:] == 0).all()  # 64×48 content, 8 rows of padding each side
    assert tuple(out[32, 32]) == (200, 100, 50)
    assert resize_square(np.stack([out, out]), 32).shape == (2, 32, 32, 3)


@pytest.mark.unit
def test_class_weights_inverse_frequency() -> None:
    weights = class_weights(np.array([0, 0, 0, 1, 2, 2]))
    raw = np.array([6 / 9, 2.0, 1.0])
    np.testing.assert_allclose(weights, raw / raw.mean(), rtol=1e-6)
    assert weights[1] > weights[2] > weights[0]
    np.testing.assert_allclose(
        class_weights(np.array([0, 0, 0, 1, 2, 2]), power=0.5), raw**0.5 / (raw**0.5).mean()
    )
    np.testing.assert_allclose(class_weights(np.array([0, 0, 0, 1, 2, 2]), power=0), [1, 1, 1])


@pytest.mark.unit
def test_missing_class_is_named() -> None:
    with pytest.raises(ValueError, match="fallen"):
        class_weights(np.array([0, 1, 1]))
    images, labels = bar_split(8, 0)
    with pytest.raises(ValueError, match="fallen"):
        train_model((images[labels < 2], labels[labels < 2]), None, TINY, progress=False)
    with pytest.raises(ValueError, match="empty"):
        train_model((images[:0], labels[:0]), None, TINY, progress=False)


@pytest.mark.unit
@pytest.mark.parametrize("epochs", [1, 2, 5, 10])
def test_any_number_of_steps_trains(epochs: int) -> None:
    """One batch per epoch (a small train split): five epochs are five steps, and a 20 % warm-up of exactly one step
    is where one-cycle's schedule divides by zero."""
    images, labels = bar_split(4, 0)
    assert len(images) <= TINY["batch_size"]  # one batch per epoch
    _, history = train_model((images, labels), None, {**TINY, "epochs": epochs}, progress=False)
    assert len(history) == epochs


# --- dataset hash ------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_dataset_hash_from_dvc_lock_then_manifest(tmp_path: Path) -> None:
    lock, snapshot = tmp_path / "dvc.lock", tmp_path / "data" / "snapshot"
    assert dataset_hash(lock, snapshot) == ""
    snapshot.mkdir(parents=True)
    (snapshot / "manifest.json").write_bytes(b'{"photos": []}')
    assert dataset_hash(lock, snapshot) == "sha256:" + hashlib.sha256(b'{"photos": []}').hexdigest()
    lock.write_text(
        "schema: '2.0'\nstages:\n  snapshot:\n    outs:\n"
        f"    - path: {snapshot.as_posix()}\n      md5: 0123abcd.dir\n      size: 10\n      nfiles: 1\n"
    )
    assert dataset_hash(lock, snapshot) == "0123abcd.dir"


# --- augmentation ------------------------------------------------------------------------------------------------
def _top_half_brighter() -> np.ndarray:
    image = np.full((64, 64, 3), 30, np.uint8)
    image[:32] = 220
    return image


@pytest.mark.unit
def test_augmentation_never_turns_the_image_upside_down() -> None:
    transform = train_transforms(ALL_AUGMENTS, seed=0)
    image = _top_half_brighter()
    for _ in range(100):
        out = transform(image=image)["image"]
        assert out.shape == (3, 64, 64) and out.dtype == torch.float32
        assert out[:, :24].mean() > out[:, 40:].mean()  # no vertical flip, no 90°/180° rotation


@pytest.mark.unit
def test_torchvision_equivalent_keeps_orientation_too() -> None:
    torch.manual_seed(0)
    transform = torchvision_train_transforms(ALL_AUGMENTS)
    for _ in range(50):
        out = transform(_top_half_brighter())
        assert out.shape == (3, 64, 64) and out.dtype == torch.float32
        assert out[:, :24].mean() > out[:, 40:].mean()


@pytest.mark.unit
def test_seeded_augmentation_is_reproducible() -> None:
    images, _ = bar_split(6, 0)
    a = [train_transforms(ALL_AUGMENTS, seed=3)(image=img)["image"] for img in images]
    b = [train_transforms(ALL_AUGMENTS, seed=3)(image=img)["image"] for img in images]
    c = [train_transforms(ALL_AUGMENTS, seed=4)(image=img)["image"] for img in images]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.unit
def test_eval_transforms_match_vectorized_normalization() -> None:
    images, _ = bar_split(3, 0)
    one_by_one = torch.stack([eval_transforms()(image=img)["image"] for img in images])
    torch.testing.assert_close(one_by_one, normalize_batch(images), atol=1e-5, rtol=1e-5)


@pytest.mark.unit
def test_loader_batches() -> None:
    images, labels = bar_split(10, 0)
    batches = list(make_loader(make_dataset(images, labels, train=True, seed=0), 4, shuffle=True, seed=0))
    assert [len(b[1]) for b in batches] == [4, 4]  # the ragged last batch is dropped while training
    assert batches[0][0].shape == (4, 3, 32, 32)
    evaluation = make_loader(make_dataset(images, labels, train=False), 4, shuffle=False)
    assert sum(len(b[1]) for b in evaluation) == 10
    tv = make_dataset(images, labels, train=True, backend="torchvision")
    assert tv[0][0].shape == (3, 32, 32)


# --- models --------------------------------------------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize("arch", ["tiny_cnn", "mobilenet_v3_small", "resnet18"])
def test_build_model_outputs_three_logits(arch: str) -> None:
    model = build_model(arch, len(TILT_CLASSES)).eval()
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 3)


@pytest.mark.unit
def test_weights_path_loads_matching_tensors_and_skips_another_head(tmp_path: Path) -> None:
    source = build_model("tiny_cnn", 5)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = build_model("tiny_cnn", 3, weights_path=tmp_path / "w.pt")
    torch.testing.assert_close(
        model.state_dict()["features.0.0.weight"], source.state_dict()["features.0.0.weight"]
    )
    with pytest.raises(ValueError, match="no tensor"):
        torch.save({"other": torch.zeros(1)}, tmp_path / "bad.pt")
        build_model("tiny_cnn", 3, weights_path=tmp_path / "bad.pt")


@pytest.mark.unit
def test_checkpoint_round_trip_and_predict(tmp_path: Path) -> None:
    images, _ = bar_split(5, 0)
    model = build_model("tiny_cnn").eval()
    meta = {
        "arch": "tiny_cnn",
        "classes": list(TILT_CLASSES),
        "image_size": 32,
        "mean": [0.5] * 3,
        "std": [0.2] * 3,
    }
    save_checkpoint(tmp_path / "m" / "model.pt", model, {**meta, "params": {"train.lr": 0.1}})
    loaded, loaded_meta = load_checkpoint(tmp_path / "m" / "model.pt")
    assert loaded_meta == {**meta, "params": {"train.lr": 0.1}}
    probs = predict(loaded, images, batch_size=2)
    assert probs.shape == (5, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(probs, predict(model, images, batch_size=64), atol=1e-6)
    assert predict(model, images[:0], 8).shape == (0, 3)


# --- a tiny real training ------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_tiny_training_loss_falls_and_is_reproducible(tmp_path: Path) -> None:
    train, val = bar_split(48, 1), bar_split(16, 2)
    model, history = train_model(train, val, {**TINY, "epochs": 4}, progress=False)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(0 <= row["val_macro_f1"] <= 1 for row in history)
    assert not model.training
    _, again = train_model(train, val, {**TINY, "epochs": 4}, progress=False)
    for a, b in zip(history, again, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_macro_f1"] == pytest.approx(b["val_macro_f1"], abs=1e-6)
    write_history(tmp_path / "h.csv", history)
    with (tmp_path / "h.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert (
        list(rows[0]) == ["epoch", "train_loss", "val_accuracy", "val_macro_f1"] and rows[-1]["epoch"] == "4"
    )


@pytest.mark.unit
def test_training_without_val_keeps_the_last_epoch() -> None:
    images, labels = bar_split(24, 1)
    _, history = train_model(
        (images, labels), (images[:0], labels[:0]), {**TINY, "epochs": 1}, progress=False
    )
    assert len(history) == 1 and math.isnan(history[0]["val_macro_f1"])


# --- the stages, end to end, against a throwaway MLflow store ----------------------------------------------------
def _write_split(directory: Path, images: np.ndarray, labels: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "images.npy", images)
    np.save(directory / "labels.npy", labels)
    (directory / "ids.json").write_text(json.dumps([f"{directory.name}-{i}" for i in range(len(labels))]))


@pytest.mark.slow
def test_train_and_evaluate_stages_track_in_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from pzone_training import evaluate, train

    monkeypatch.chdir(tmp_path)
    for name in ("PZONE_MLFLOW_EXPERIMENT", "PZONE_MLFLOW_MODEL_NAME", "PZONE_MLFLOW_ARTIFACT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PZONE_DATA_DIR", str(tmp_path / ".pzone"))  # the MLflow store defaults to data_dir
    monkeypatch.delenv("PZONE_MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "params.yaml").write_text(
        "base: {seed: 3}\nprepare: {image_size: 32}\n"
        "train: {arch: tiny_cnn, epochs: 2, batch_size: 16, lr: 0.003, num_threads: 2}\nevaluate: {batch_size: 8}\n"
    )
    _write_split(tmp_path / "data/prepared/train", *bar_split(32, 1))
    _write_split(tmp_path / "data/prepared/val", *bar_split(0, 2))  # an empty val split is allowed
    _write_split(tmp_path / "data/prepared/test", *bar_split(12, 3))
    (tmp_path / "data/snapshot").mkdir(parents=True)
    manifest = json.dumps(
        {
            "classes": list(TILT_CLASSES),
            "images": [{"sha256": "ab" * 32, "label": "fallen", "photo_ids": ["p1"]}],
        }
    )
    (tmp_path / "data/snapshot/manifest.json").write_text(manifest)

    train.main(progress=False)
    run = json.loads((tmp_path / "models/run.json").read_text())
    assert set(run) == {
        "run_id",
        "model_uri",
        "experiment_id",
        "dataset_hash",
        "train_seconds",
        "train_images_per_s",
    }
    assert run["train_seconds"] > 0 and run["train_images_per_s"] > 0
    assert run["dataset_hash"] == "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    _, meta = load_checkpoint(tmp_path / "models/model.pt")
    assert (
        meta["image_size"] == 32
        and meta["classes"] == list(TILT_CLASSES)
        and meta["params"]["train.epochs"] == 2
    )
    with (tmp_path / "reports/train_history.csv").open() as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2"]

    mlflow.set_tracking_uri("sqlite:///.pzone/mlflow.db")
    client = MlflowClient()
    logged = client.get_run(run["run_id"])
    assert logged.data.tags["dataset_hash"] == run["dataset_hash"]
    assert logged.data.params["train.augment.roll_limit_deg"] == "5.0"
    assert logged.data.params["prepare.image_size"] == "32" and logged.data.params["seed"] == "3"
    assert [m.step for m in client.get_metric_history(run["run_id"], "train_loss")] == [1, 2]
    experiment = client.get_experiment(run["experiment_id"])
    assert experiment.name == "pzone-tilt"
    assert experiment.artifact_location == (tmp_path / ".pzone/mlartifacts").resolve().as_uri()
    assert not (tmp_path / "mlruns").exists()
    # what it trained from, for `pzone dataset pull` and `pzone lineage` (pzone_pipelines.dataset_record)
    lineage = {a.path for a in client.list_artifacts(run["run_id"], "lineage")}
    assert lineage == {
        f"lineage/{n}" for n in ("params.yaml", "manifest.json", "prepared_ids.json")
    }  # no dvc.lock
    assert logged.data.tags["pzone.dataset_digest"] == run["dataset_hash"]
    assert logged.data.tags["pzone.code_commit"]  # a commit, or "unknown" outside a git work tree
    (dataset_input,) = logged.inputs.dataset_inputs
    input_tags = {t.key: t.value for t in dataset_input.tags}
    assert (input_tags["rows"], input_tags["class_counts"]) == ("1", '{"fallen": 1}')
    assert dataset_input.dataset.digest == run["dataset_hash"][:36]

    evaluate.main()
    metrics = json.loads((tmp_path / "reports/metrics.json").read_text())
    assert metrics["n_test"] == 12 and set(metrics["per_class"]) == set(TILT_CLASSES)
    assert json.loads((tmp_path / "reports/champion_metrics.json").read_text()) == {"exists": False}
    with (tmp_path / "reports/confusion.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and set(rows[0]) == {"actual", "predicted"} and rows[0]["actual"] in TILT_CLASSES
    for name in ("confusion.png", "curves.png"):
        assert (tmp_path / "reports" / name).stat().st_size > 1000
    logged = client.get_run(run["run_id"])
    assert logged.data.metrics["test_macro_f1"] == pytest.approx(metrics["macro_f1"])
    artifacts = {a.path for a in client.list_artifacts(run["run_id"], "reports")}
    assert "reports/metrics.json" in artifacts

    # The lead's register stage makes it the champion; the next evaluation scores it on the same test split.
    version = mlflow.register_model(run["model_uri"], "pzone-tilt")
    client.set_registered_model_alias("pzone-tilt", "champion", version.version)
    evaluate.main()
    champion = json.loads((tmp_path / "reports/champion_metrics.json").read_text())
    assert champion["exists"] is True and champion["version"] == str(version.version)
    assert champion["macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert champion["accuracy"] == pytest.approx(metrics["accuracy"])


# --- behaviour of a model trained on rendered photos -------------------------------------------------------------
BEHAVIOUR_SIZE = 64


def _render(tilts: np.ndarray, seed: int) -> list[Image.Image]:
    render = pytest.importorskip("pzone_stack.photosim.render")
    rng = np.random.default_rng(seed)
    # A quarter of the camera's resolution keeps rendering ~5 ms a photo; letterboxing to 64 px loses nothing more.
    return [render.render_image(float(t), rng, size=(256, 192)) for t in tilts]


@pytest.fixture(scope="module")
def rendered_model() -> object:
    """One model trained once (≈30–60 s on 2 cores) on rendered photos with clear angles within each class."""
    rng = np.random.default_rng(11)
    labels = rng.choice(3, size=640, p=[0.4, 0.3, 0.3])
    tilts = rng.uniform(np.array([0.0, 28.0, 68.0])[labels], np.array([14.0, 50.0, 90.0])[labels])
    images = np.stack([letterbox(photo, BEHAVIOUR_SIZE) for photo in _render(tilts, 12)])
    params = {"arch": "tiny_cnn", "epochs": 14, "batch_size": 32, "lr": 0.003, "num_threads": 2}
    model, _ = train_model((images, labels.astype(np.int64)), None, params, progress=False)
    return model


@pytest.mark.slow
def test_rendered_model_learns_and_a_mirrored_photo_keeps_its_class(rendered_model: torch.nn.Module) -> None:
    rng = np.random.default_rng(21)
    labels = np.resize(np.array([0, 1, 2]), 90)
    tilts = rng.uniform(np.array([0.0, 28.0, 68.0])[labels], np.array([14.0, 50.0, 90.0])[labels])
    images = np.stack([letterbox(photo, BEHAVIOUR_SIZE) for photo in _render(tilts, 22)])
    plain = predict(rendered_model, images, flip_tta=False).argmax(axis=1)
    mirrored = predict(rendered_model, images[:, :, ::-1], flip_tta=False).argmax(axis=1)
    assert accuracy(labels, plain) >= 0.75
    assert (plain == mirrored).mean() >= 0.85  # learnt, without the test-time flip
    with_tta = predict(rendered_model, images).argmax(axis=1)
    assert (with_tta == predict(rendered_model, images[:, :, ::-1]).argmax(axis=1)).all()  # exact with it


@pytest.mark.slow
def test_upright_scooter_turned_to_80_degrees_is_not_upright(rendered_model: torch.nn.Module) -> None:
    rng = np.random.default_rng(31)
    photos = _render(rng.uniform(0.0, 10.0, 40), 32)
    upright = np.stack([letterbox(photo, BEHAVIOUR_SIZE) for photo in photos])
    assert (predict(rendered_model, upright).argmax(axis=1) == 0).mean() >= 0.75
    turned = np.stack(
        [
            letterbox(
                photo.rotate(80 if i % 2 else -80, resample=Image.Resampling.BILINEAR, expand=True),
                BEHAVIOUR_SIZE,
            )
            for i, photo in enumerate(photos)
        ]
    )
    assert (predict(rendered_model, turned).argmax(axis=1) == 0).mean() <= 0.15

"""Training circle speed: `dvc repro` full and no-op, training throughput, data loading with the model step removed.

A throwaway DVC project (the repository's dvc.yaml, stage code and params.yaml) over a synthetic platform: ``count``
rendered photos with their sensor readings written by :func:`pzone_stack.photosim.seed.populate` into the project's own
SQLite database and local object store; MLflow tracks into the project's own store. Then:

* ``repro_full_s``: the first ``dvc repro`` (snapshot → prepare → train → evaluate → propose), wall time;
* ``repro_noop_s``: ``dvc repro`` again with nothing changed (the snapshot looks, everything else is skipped);
* ``train_images_per_s``: training images per second of the train stage (epochs × train images / train time,
  validation included), from the stage's own record;
* ``loader_images_per_s``: one pass over the prepared train split through the training DataLoader (decode-free
  uint8 arrays → albumentations augmentation → normalized tensors) with no model step; the same with the
  torchvision-transforms version of the augmentation (``loader_torchvision_images_per_s``).

    uv run python benchmarks/training.py --quick   # 200 photos, 64 px, 2 epochs (limit: 45 s)
    uv run python benchmarks/training.py           # 2,000 photos with the repository's params.yaml

Progress goes to stderr; the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests.support without PYTHONPATH=.
    sys.path.insert(0, str(ROOT))

QUICK = {
    "prepare": {"image_size": 64},
    "train": {"epochs": 2, "batch_size": 32},
    "register": {"min_macro_f1": 0.0},
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def loader_rate(prepared: Path, params: dict[str, Any], backend: str, threads: int) -> float:
    import torch

    from pzone_training.data import load_split
    from pzone_training.params import TrainParams
    from pzone_training.train import make_dataset, make_loader

    torch.set_num_threads(threads)
    p = TrainParams.from_params(params)
    split = load_split(prepared / "train")
    dataset = make_dataset(split.images, split.labels, True, p.augment, p.seed, backend=backend)  # type: ignore[arg-type]
    loader = make_loader(dataset, p.batch_size, shuffle=True, seed=p.seed)
    started = time.perf_counter()
    seen = 0
    for images, _ in loader:
        seen += int(images.shape[0])
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small and fast (≤ 45 s)")
    parser.add_argument(
        "--count", type=int, help="photos on the synthetic platform (default 2000, quick 200)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temp project and print its path")
    args = parser.parse_args()
    count = args.count or (200 if args.quick else 2000)

    from pzone_pipelines.params import load_params
    from tests.support.repro import make_project, populate_platform, run_dvc

    folder = Path(tempfile.mkdtemp(prefix="pzone-bench-train-"))
    root = make_project(folder / "project", QUICK if args.quick else {})
    started = time.perf_counter()
    populate_platform(root, count, seed=args.seed)
    log(f"platform: {count} photos in {time.perf_counter() - started:.1f} s ({root})")

    started = time.perf_counter()
    run_dvc(root, "repro")
    repro_full_s = time.perf_counter() - started
    log(f"dvc repro (full): {repro_full_s:.1f} s")
    started = time.perf_counter()
    noop = run_dvc(root, "repro")
    repro_noop_s = time.perf_counter() - started
    skipped = noop.stdout.count("didn't change, skipping")
    log(f"dvc repro (no-op): {repro_noop_s:.1f} s, {skipped} stages skipped")

    params = load_params(root / "params.yaml")
    run = json.loads((root / "models" / "run.json").read_text())
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    threads = int(params["train"].get("num_threads") or os.cpu_count() or 1)
    loader = loader_rate(root / "data" / "prepared", params, "albumentations", threads)
    loader_tv = loader_rate(root / "data" / "prepared", params, "torchvision", threads)
    train_rate = float(run["train_images_per_s"])
    log(
        f"train {train_rate:.0f} img/s, loader {loader:.0f} img/s (torchvision transforms {loader_tv:.0f} img/s)"
    )

    result = {
        "benchmark": "training",
        "quick": args.quick,
        "photos": count,
        "image_size": params["prepare"]["image_size"],
        "epochs": params["train"]["epochs"],
        "arch": params["train"]["arch"],
        "train_images_per_s": round(train_rate, 1),
        "train_seconds": round(float(run["train_seconds"]), 1),
        "loader_images_per_s": round(loader, 1),
        "loader_torchvision_images_per_s": round(loader_tv, 1),
        "loader_vs_train": round(loader / train_rate, 2),
        "repro_full_s": round(repro_full_s, 1),
        "repro_noop_s": round(repro_noop_s, 1),
        "noop_stages_skipped": skipped,
        "test_macro_f1": round(float(metrics["macro_f1"]), 4),
        "test_accuracy": round(float(metrics["accuracy"]), 4),
        "targets": {
            "macro_f1_at_least_0_90": float(metrics["macro_f1"]) >= 0.90,
            "train_within_5_min": float(run["train_seconds"]) <= 300,
            "loader_not_the_bottleneck": loader > train_rate,
        },
        "machine_cores": os.cpu_count(),
    }
    if args.keep:
        log(f"project kept at {root}")
    else:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

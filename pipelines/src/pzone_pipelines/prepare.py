"""Stage `prepare`: snapshot images → fixed-size RGB arrays per split (``data/prepared/<split>/``).

Each image is decoded, turned upright by its EXIF orientation, letterboxed to ``prepare.image_size`` (the whole
object stays in view: a fallen scooter is wide, an upright one tall) and stored as uint8 arrays:
``images.npy`` (N, S, S, 3), ``labels.npy`` (N,), ``ids.json`` (the images' SHA-256, in the same order).

Splits come from a hash of the photo's content, so a photo's split never depends on what else is in the dataset.
The test split is frozen membership: ``data/test_members.json`` remembers every photo ever put in test, and such
a photo stays in test even if the split fractions change later.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pzone import preprocess
from pzone.errors import UserError
from pzone.tilt import TILT_CLASSES
from pzone_pipelines.snapshot import Entry, read_manifest

SPLITS = ("train", "val", "test")
SPLIT_SALT = "pzone-split-v1"  # fixed: changing the seed must not move photos between splits


class PrepareError(UserError, RuntimeError):
    """The dataset cannot be prepared (empty split, a class with no examples, bad parameters)."""


@dataclass(frozen=True)
class PrepareParams:
    image_size: int
    val_fraction: float
    test_fraction: float

    @classmethod
    def from_mapping(cls, raw: dict[str, object]) -> PrepareParams:
        try:
            params = cls(
                image_size=int(raw["image_size"]),  # type: ignore[call-overload]
                val_fraction=float(raw["val_fraction"]),  # type: ignore[arg-type]
                test_fraction=float(raw["test_fraction"]),  # type: ignore[arg-type]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PrepareError(f"params.yaml prepare section is incomplete or not numeric: {exc}") from None
        if not 16 <= params.image_size <= 1024:
            raise PrepareError("prepare.image_size must be between 16 and 1024")
        if (
            params.val_fraction < 0
            or params.test_fraction <= 0
            or params.val_fraction + params.test_fraction >= 1
        ):
            raise PrepareError("prepare fractions: test > 0, val ≥ 0 and val + test < 1")
        return params


def split_bucket(sha256: str) -> float:
    """A stable number in [0, 1) from the photo's content hash."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(sha256: str, params: PrepareParams, test_members: set[str]) -> str:
    if sha256 in test_members:
        return "test"
    bucket = split_bucket(sha256)
    if bucket < params.test_fraction:
        return "test"
    if bucket < params.test_fraction + params.val_fraction:
        return "val"
    return "train"


def load_square(path: Path, size: int) -> np.ndarray:
    """Decode, apply EXIF orientation, show transparency on white and colours in sRGB, letterbox to size×size RGB
    (uint8): the model tier and the photo worker do the same."""
    return preprocess.load_square(path, size)


@dataclass(frozen=True)
class Prepared:
    splits: dict[str, tuple[np.ndarray, np.ndarray, list[str]]]
    skipped: list[dict[str, str]]
    test_members: set[str]

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            split: {TILT_CLASSES[i]: int(n) for i, n in sorted(Counter(labels.tolist()).items())}
            for split, (_, labels, _) in self.splits.items()
        }


def prepare_dataset(
    snapshot_dir: Path,
    entries: Sequence[Entry],
    params: PrepareParams,
    test_members: set[str],
    *,
    classes: Sequence[str] = TILT_CLASSES,
    workers: int = 2,
    on_done: Callable[[], None] | None = None,
) -> Prepared:
    def decode(entry: Entry) -> np.ndarray | str:
        try:
            array = load_square(snapshot_dir / entry.file, params.image_size)
        except FileNotFoundError:
            return "file_missing"
        except (
            Exception
        ) as exc:  # Pillow raises many kinds for a broken file; all mean "cannot learn from it"
            return f"unreadable: {type(exc).__name__}"
        finally:
            if on_done:
                on_done()
        return array

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # Pillow's decoders release the GIL
        decoded = list(pool.map(decode, entries))

    rows: dict[str, list[tuple[np.ndarray, int, str]]] = {split: [] for split in SPLITS}
    skipped: list[dict[str, str]] = []
    members = set(test_members)
    for entry, result in zip(entries, decoded, strict=True):
        if isinstance(result, str):
            skipped.append({"sha256": entry.sha256, "file": entry.file, "reason": result})
            continue
        split = assign_split(entry.sha256, params, members)
        if split == "test":
            members.add(entry.sha256)
        rows[split].append((result, classes.index(entry.label), entry.sha256))

    if not rows["test"]:
        raise PrepareError("the test split is empty: the dataset is too small (or test_fraction too low)")
    missing = [name for i, name in enumerate(classes) if not any(label == i for _, label, _ in rows["train"])]
    if missing:
        raise PrepareError(
            f"no training examples of class(es) {', '.join(missing)}: collect photos of them first"
        )

    size = params.image_size
    splits = {}
    for split, items in rows.items():
        images = np.stack([a for a, _, _ in items]) if items else np.zeros((0, size, size, 3), np.uint8)
        labels = np.array([label for _, label, _ in items], dtype=np.int64)
        splits[split] = (images, labels, [sha for _, _, sha in items])
    return Prepared(splits, skipped, members)


def write_prepared(out_dir: Path, prepared: Prepared) -> None:
    for split, (images, labels, ids) in prepared.splits.items():
        folder = out_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "images.npy", images)
        np.save(folder / "labels.npy", labels)
        (folder / "ids.json").write_text(json.dumps(ids) + "\n")
    (out_dir / "skipped.json").write_text(json.dumps(prepared.skipped, indent=1) + "\n")
    (out_dir / "counts.json").write_text(json.dumps(prepared.counts(), indent=1, sort_keys=True) + "\n")


def read_test_members(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return set(json.loads(path.read_text()))


def main(
    snapshot: Annotated[Path, typer.Option(help="Snapshot folder from the snapshot stage.")] = Path(
        "data/snapshot"
    ),
    out: Annotated[Path, typer.Option(help="Output folder (a DVC output).")] = Path("data/prepared"),
    members: Annotated[Path, typer.Option(help="Frozen test membership (a persistent DVC output).")] = Path(
        "data/test_members.json"
    ),
    params_file: Annotated[Path, typer.Option("--params", help="params.yaml to read.")] = Path("params.yaml"),
) -> None:
    """Decode, orient and resize the snapshot's images into train/val/test arrays."""
    from rich.console import Console
    from rich.progress import Progress

    from pzone_pipelines.params import load_params, section

    console = Console(stderr=True)
    params = PrepareParams.from_mapping(section(load_params(params_file), "prepare"))
    entries = read_manifest(snapshot)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("decoding", total=len(entries))
        try:
            prepared = prepare_dataset(
                snapshot, entries, params, read_test_members(members), on_done=lambda: progress.advance(task)
            )
        except PrepareError as exc:
            console.print(f"[red]prepare failed:[/red] {exc}")
            raise typer.Exit(1) from None
    write_prepared(out, prepared)
    members.parent.mkdir(parents=True, exist_ok=True)
    members.write_text(json.dumps(sorted(prepared.test_members), indent=0) + "\n")
    console.print(f"prepared {prepared.counts()}, skipped {len(prepared.skipped)}")


if __name__ == "__main__":
    from pzone.cli.common import run_command

    run_command(main)

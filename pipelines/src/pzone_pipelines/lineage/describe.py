"""The two lineage reports as plain data (what ``--json`` prints) and as lines for a person; pure functions of the
records (:mod:`~pzone_pipelines.lineage.record`) and the platform's rows (:mod:`~pzone_pipelines.lineage.platform`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pzone_pipelines import dataset_record as record
from pzone_pipelines.lineage.platform import Answer, PhotoRow
from pzone_pipelines.lineage.record import RunLineage, Version

# The platform's label sources, as a person says them: ``manual`` is the operator's label.
SOURCE_NAMES = {"manual": "operator"}
PARAM_SECTIONS = ("base", "prepare", "train")
TRAINED_ON = "train"  # the split a model learns from; val and test only measure it
TEST_F1_TAG = "test_macro_f1"  # on a version: measured at its promotion; on a run: by the evaluate stage
UNKNOWN_MANIFEST = "unknown: the run recorded no manifest"


@dataclass(frozen=True)
class Hit:
    """A registered version whose dataset holds the photo: in which prepared split (None: the snapshot held it but
    the prepare stage left it out), found by its id or by the same bytes under another photo's id."""

    version: Version
    split: str | None
    matched_by: str


def iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def label_sources(images: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts = Counter(SOURCE_NAMES.get(str(image.get("source")), str(image.get("source"))) for image in images)
    return dict(sorted(counts.items()))


def manifest_photo_ids(manifest: Mapping[str, Any]) -> list[str]:
    return sorted({str(pid) for image in manifest["images"] for pid in image.get("photo_ids") or ()})


def dataset_summary(lineage: RunLineage) -> dict[str, Any]:
    """Digest, counts and splits of the run's dataset (counts are None when the run recorded no manifest)."""
    digest = lineage.tags.get(record.DATASET_DIGEST_TAG) or lineage.tags.get("dataset_hash") or None
    manifest = lineage.manifest
    return {
        "digest": digest,
        "images": len(manifest["images"]) if manifest else None,
        "photos": len(manifest_photo_ids(manifest)) if manifest else None,
        "class_counts": record.class_counts(manifest) if manifest else None,
        "label_sources": label_sources(manifest["images"]) if manifest else None,
        "splits": {split: len(ids) for split, ids in lineage.prepared_ids.items()},
    }


def taken_at_report(found: Mapping[str, Any] | None, unknown: str | None = None) -> dict[str, Any]:
    """The photos' time range for a report (from :func:`~pzone_pipelines.lineage.platform.taken_at_range`), or
    why it is unknown."""
    if found is None:
        return {"unknown": unknown or UNKNOWN_MANIFEST}
    return {**found, "first": iso(found.get("first")), "last": iso(found.get("last"))}


def model_report(
    ref: str, lineage: RunLineage, versions: Sequence[Version], taken_at: Mapping[str, Any]
) -> dict[str, Any]:
    """What ``pzone lineage model`` says: the versions made from the run, its dataset, label params, code, params."""
    params = lineage.params or {}
    dirty = lineage.tags.get(record.CODE_DIRTY_TAG)
    f1 = lineage.metrics.get(TEST_F1_TAG)
    return {
        "ref": ref,
        "run_id": lineage.run_id,
        "versions": [
            {
                "model": v.model,
                "version": v.version,
                "aliases": list(v.aliases),
                TEST_F1_TAG: _number(v.tags.get(TEST_F1_TAG)),
            }
            for v in versions
        ],
        "evaluate_test_macro_f1": f1,
        "dataset": {**dataset_summary(lineage), "taken_at": dict(taken_at)},
        "labels": params.get("labels"),
        "code": {
            "commit": lineage.tags.get(record.CODE_COMMIT_TAG, record.UNKNOWN_COMMIT),
            "dirty": None if dirty is None else dirty == "true",
        },
        "params": {name: params.get(name) for name in PARAM_SECTIONS},
    }


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def find_photo(lineage: RunLineage, photo_id: str, sha256: str | None) -> tuple[str | None, str] | None:
    """(split, matched_by) of the photo in the run's dataset, or None when the dataset does not hold it."""
    if lineage.manifest is None:
        return None
    for image in lineage.manifest["images"]:
        if photo_id in (image.get("photo_ids") or ()):
            matched_by = "photo id"
        elif sha256 is not None and image.get("sha256") == sha256:
            matched_by = "same content"  # the same bytes uploaded again: the model saw this very image
        else:
            continue
        split = next((s for s, ids in lineage.prepared_ids.items() if image["sha256"] in ids), None)
        return split, matched_by
    return None


def photo_report(
    photo_id: str,
    model: str,
    row: PhotoRow | None,
    unknown: str | None,
    hits: Sequence[Hit],
    without_lineage: Sequence[Version],
    scanned: int,
    answered: Sequence[Answer] | None,
) -> dict[str, Any]:
    """What ``pzone lineage photo`` says: the platform's row, the versions whose data held it, those that answered."""
    if unknown is not None:
        platform: dict[str, Any] = {"unknown": unknown}
    elif row is None:
        platform = {"found": False}
    else:
        platform = {
            "found": True,
            "sha256": row.sha256,
            "taken_at": iso(row.taken_at),
            "status": row.status,
            "verdict": row.verdict,
            "model_version": row.model_version,
        }
    return {
        "photo_id": photo_id,
        "model": model,
        "platform": platform,
        "datasets": [
            {
                "version": h.version.label,
                "aliases": list(h.version.aliases),
                "run_id": h.version.run_id,
                "split": h.split,
                "matched_by": h.matched_by,
            }
            for h in hits
        ],
        "trained_on": [h.version.label for h in hits if h.split == TRAINED_ON],
        "versions_scanned": scanned,
        "versions_without_lineage": [v.label for v in without_lineage],
        "answered": None
        if answered is None
        else [{"version": a.model_version, "verdict": a.label, "at": iso(a.predicted_at)} for a in answered],
    }


def _counts(counts: Mapping[str, int] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "unknown"


def _params(values: Mapping[str, Any] | None, prefix: str = "") -> list[str]:
    """``key=value`` of a params section, nested sections flattened (``augment.hflip_p=0.5``)."""
    out: list[str] = []
    for key, value in (values or {}).items():
        if isinstance(value, Mapping):
            out += _params(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={value}")
    return out


def _aliases(aliases: Sequence[str]) -> str:
    return f" ({', '.join(aliases)})" if aliases else ""


def model_lines(report: Mapping[str, Any]) -> list[str]:
    data, code = report["dataset"], report["code"]
    lines = [f"{report['ref']}: run {report['run_id']}"]
    for v in report["versions"]:
        f1 = v[TEST_F1_TAG]
        lines.append(
            f"  version   {v['model']}/{v['version']}{_aliases(v['aliases'])}"
            + (f", test macro-F1 {f1:.4f} at promotion" if f1 is not None else "")
        )
    if not report["versions"]:
        lines.append("  version   none: this run is not registered")
    if report["evaluate_test_macro_f1"] is not None:
        lines.append(f"  evaluate  test macro-F1 {report['evaluate_test_macro_f1']:.4f}")
    lines.append(f"  dataset   digest {data['digest'] or 'unknown'}")
    lines.append(f"            {data['images']} images from {data['photos']} photos")
    lines.append(f"            classes: {_counts(data['class_counts'])}")
    lines.append(f"            label sources: {_counts(data['label_sources'])}")
    lines.append(f"            splits: {_counts(data['splits'])}")
    taken = data["taken_at"]
    if "unknown" in taken:
        lines.append(f"            taken: {taken['unknown']}")
    else:
        missing = data["photos"] - taken["photos_found"] if data["photos"] is not None else 0
        lines.append(
            f"            taken: {taken['first'] or 'unknown'} → {taken['last'] or 'unknown'}"
            + (f" ({missing} of them no longer on the platform)" if missing else "")
            + (f" ({taken['without_taken_at']} without a taken-at)" if taken["without_taken_at"] else "")
        )
    lines.append(f"  labels    {' '.join(_params(report['labels'])) or 'not recorded'}")
    dirty = {True: " (work tree dirty)", False: "", None: " (dirty: unknown)"}[code["dirty"]]
    lines.append(f"  code      commit {code['commit']}{dirty}")
    for name, values in report["params"].items():
        lines.append(f"  {name:<9} {' '.join(_params(values)) or 'not recorded'}")
    return lines


def photo_lines(report: Mapping[str, Any]) -> list[str]:
    platform = report["platform"]
    lines = [f"photo {report['photo_id']}"]
    if "unknown" in platform:
        lines.append(f"  platform  {platform['unknown']}")
    elif not platform["found"]:
        lines.append("  platform  not on the platform (any more)")
    else:
        lines.append(
            f"  platform  taken {platform['taken_at'] or 'unknown'}, {platform['status']}, "
            f"verdict {platform['verdict']}"
            + (f" by {platform['model_version']}" if platform["model_version"] else "")
        )
    trained = report["trained_on"]
    lines.append(f"  trained   {', '.join(trained) if trained else 'no registered version trained on it'}")
    for hit in report["datasets"]:
        where = f"{hit['split']} split" if hit["split"] else "snapshot only (the prepare stage left it out)"
        same = " (the same bytes as another photo)" if hit["matched_by"] == "same content" else ""
        lines.append(f"            {hit['version']}{_aliases(hit['aliases'])}: {where}{same}")
    lines.append(
        f"            scanned {report['versions_scanned']} registered versions of {report['model']} "
        "(every version's manifest: O(versions))"
    )
    if report["versions_without_lineage"]:
        lines.append(f"            no lineage recorded: {', '.join(report['versions_without_lineage'])}")
    answered = report["answered"]
    if answered is None:
        lines.append(f"  answered  {platform.get('unknown', 'unknown')}")
    elif not answered:
        lines.append("  answered  no version has answered it yet")
    for answer in answered or ():
        lines.append(f"  answered  {answer['version']}: {answer['verdict']} at {answer['at']}")
    return lines

"""Label refresh, the platform's work before every retrain: the sensor label of every stored photo, computed with the
project's ``labels`` params and upserted into ``photo_labels`` (what live accuracy and the history's "measured" read).

The snapshot stage of `dvc repro` computes the same labels in memory and writes nothing; this is where they are
stored: `pzone retrain` (also as the demo runs it), ``--auto``'s decision and `pzone dataset seed`.
"""

from __future__ import annotations

from pathlib import Path

from pzone.labels import LabelParams, LabelStats
from pzone_pipelines.params import PARAMS_FILE, ParamsError, load_params


def project_label_params(project: Path) -> LabelParams:
    """The ``labels`` section of the project's params.yaml, validated (ParamsError with a sentence)."""
    path = project / PARAMS_FILE
    params = load_params(path)
    try:
        return LabelParams.from_mapping(params.get("labels") or {})
    except ValueError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def refresh_platform_labels(database_url: str, params: LabelParams) -> LabelStats:
    """Refresh every stored photo's sensor label and commit. A database that is missing, unreachable or behind
    raises ``DatabaseUnavailable`` before anything is created (a SQLite file included)."""
    from sqlalchemy.orm import Session

    from pzone.db.engine import make_engine
    from pzone.db.readonly import check_readable, read_only_engine
    from pzone.labels import refresh_labels

    probe = read_only_engine(database_url)
    try:
        check_readable(database_url, probe)
    finally:
        probe.dispose()
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            stats = refresh_labels(session, params)
            session.commit()
    finally:
        engine.dispose()
    return stats


def describe(stats: LabelStats) -> str:
    """One line: how many photos the refresh labeled, by class."""
    return (
        f"labels refreshed: {stats.labeled} of {stats.photos} stored photos labeled {stats.labels} "
        f"({stats.manual} by an operator)"
    )

"""The ``pzone dataset import`` command: a folder and its labels CSV into the platform the settings name, and a
report of what was imported and what was refused, each file with its reason."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from pzone.cli.common import console, fail, settings_or_fail, stop_on_signals
from pzone.errors import UserError
from pzone_api.settings import Settings

if TYPE_CHECKING:
    from pzone_api.dataset_import.importer import ImportReport

LABELS_FILE = "labels.csv"


def import_photos(
    folder: Annotated[
        Path, typer.Argument(help="The folder of photos (subfolders included).", show_default=False)
    ],
    operator: Annotated[
        str,
        typer.Option(
            help="The operator account (e-mail) the photos are owned by and the CSV's labels recorded under "
            "(required: an import is an operator's act).",
            show_default=False,
        ),
    ],
    labels: Annotated[
        Path | None, typer.Option(help=f"The labels CSV (default: FOLDER/{LABELS_FILE}).", show_default=False)
    ] = None,
    zone: Annotated[str | None, typer.Option(help="Zone of the photos whose row names no device_id.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check every row and file; write nothing.")
    ] = False,
) -> None:
    """Import a folder of photos with a labels CSV, through the same checks and storage as uploads.

    The CSV (header first) has one row per file: file,label (upright, tilted or fallen: the operator's label) or
    file,device_id,taken_at (ISO 8601 with a UTC offset: the device's readings label the photo); both forms may
    mix, with empty cells. A file that fails a check (not an image, too large, corrupt, active content, the same
    bytes twice or already stored, an unknown device, a bad row, no row) is refused with its reason; the rest are
    imported. Exit 0 when a file was imported, 1 when none, 2 when the import could not start.
    """
    settings = settings_or_fail(Settings)
    from pzone.db.engine import make_engine, safe_url
    from pzone.db.readonly import read_only_engine
    from pzone.storage import object_store_from_settings
    from pzone_api.dataset_import.importer import ImportPlan, check_operator, import_folder, prepare

    plan = ImportPlan(folder, labels if labels is not None else folder / LABELS_FILE, operator, zone, dry_run)
    url = settings.sqlalchemy_url
    try:
        prepared = prepare(plan)
        _check_readable(url)
    except UserError as exc:
        raise _fail(exc) from None
    engine = read_only_engine(url) if dry_run else make_engine(url)
    try:
        operator_id = check_operator(engine, plan)
    except UserError as exc:
        engine.dispose()
        raise _fail(exc) from None
    store = None if dry_run else object_store_from_settings(settings)
    stop = threading.Event()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    stop_on_signals(stop)  # the file in hand is finished, so that no photo is left half-stored
    verb = "checking" if dry_run else "importing into"
    console.print(f"{verb} {escape(safe_url(url))}: {len(prepared.rows)} file(s) named by the CSV")
    try:
        with _progress(console, len(prepared.rows)) as advance:
            report = import_folder(
                engine, store, settings, plan, prepared, operator_id, stop=stop, on_file=advance
            )
    finally:
        engine.dispose()
        # The caller's handlers again: the command may run inside another program (tests do).
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    print_report(report, console)
    if report.error is not None:
        raise report.error
    if report.interrupted:
        raise typer.Exit(130)
    if not report.imported:
        raise typer.Exit(1)


def _check_readable(url: str) -> None:
    """``DatabaseUnavailable`` unless the database is there at the code's schema; creates nothing (a missing SQLite
    file stays missing)."""
    from pzone.db.readonly import check_readable, read_only_engine

    probe = read_only_engine(url)
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)  # its INFO lines as it loads would bury the answer
    try:
        check_readable(url, probe)
    finally:
        alembic_log.setLevel(level)
        probe.dispose()


def _fail(error: UserError) -> typer.Exit:
    hint = f"\nhint: {error.hint}" if error.hint else ""
    return fail(escape(f"{error}{hint}"))


def print_report(report: ImportReport, out: Console) -> None:
    """Each refused file with its reason, then the summary: imported, labeled by whom, refused by reason."""
    for refusal in report.refused:
        out.print(
            f"[yellow]refused[/yellow] {escape(refusal.file)}: {refusal.code}: {escape(refusal.reason)}",
            soft_wrap=True,
        )
    kinds = f"{report.by_operator} labeled by the operator, {report.waiting} waiting for readings"
    if report.dry_run:
        out.print(f"dry run: {len(report.imported)} file(s) would be imported ({kinds}); nothing was written")
    else:
        out.print(f"imported {len(report.imported)} file(s) ({kinds})")
    stats = report.refresh
    if stats is not None:
        reasons = ", ".join(f"{n} {reason}" for reason, n in stats.reasons.items() if reason != "ok")
        out.print(
            f"labeled by their device's readings now: {stats.labeled} of {stats.photos}"
            + (f"; not yet: {reasons} (every `pzone retrain` refreshes them again)" if reasons else ""),
            soft_wrap=True,
        )
    if report.refused:
        counts = ", ".join(f"{code} {n}" for code, n in report.refused_by_code().items())
        out.print(f"refused {len(report.refused)} file(s): {counts}", soft_wrap=True)
    if report.interrupted:
        out.print(
            "[yellow]stopped by a signal: the files after the last one reported were not looked at[/yellow]"
        )


@contextmanager
def _progress(out: Console, total: int) -> Iterator[Callable[[str], None]]:
    """A transient progress bar over the files; yields the callback that advances it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("files"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=True) as bar:
        task = bar.add_task("files", total=total)
        yield lambda _file: bar.advance(task)

"""``pzone logs backup``: ship the rotated log files under PZONE_LOG_DIR to S3 (:mod:`pzone.logbackup`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pzone.cli.common import console, fail

logs_app = typer.Typer(help="Log files written under PZONE_LOG_DIR.", no_args_is_help=True)


@logs_app.command("backup")
def logs_backup(
    source: Annotated[
        Path | None,
        typer.Option(help="Folder of log files, searched recursively; default PZONE_LOG_DIR."),
    ] = None,
    prefix: Annotated[str, typer.Option(help="Key prefix in the bucket.")] = "logs/",
    bucket: Annotated[str | None, typer.Option(help="Bucket; default PZONE_S3_BUCKET.")] = None,
    host_label: Annotated[
        str | None,
        typer.Option(
            help="Key segment after the prefix; default this host's (pod's) name.",
            envvar="PZONE_LOG_HOST_LABEL",
        ),
    ] = None,
    delete_uploaded: Annotated[
        bool,
        typer.Option(
            "--delete-uploaded/--keep-uploaded",
            " /--keep",
            help="Delete each local file once its copy in S3 is verified (active files never).",
        ),
    ] = False,
    include_active: Annotated[
        bool, typer.Option("--include-active", help="Upload the active *.log files too (never deleted).")
    ] = False,
    min_age_s: Annotated[
        float, typer.Option(min=0.0, help="Leave files modified in the last N seconds alone.")
    ] = 60.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would happen; change nothing.")
    ] = False,
) -> None:
    """Upload rotated log files (<name>.log.<suffix>) to s3://BUCKET/<prefix><host>/<relative path>.

    Idempotent: a file S3 already has (same size and SHA-256) is skipped. With --delete-uploaded a local file is
    deleted only after a HEAD of its object shows the same size and SHA-256. Exit code 1 when any file failed,
    2 when the backup could not start (source, bucket, credentials).
    """
    from pydantic import ValidationError

    from pzone import logbackup
    from pzone.settings import CoreSettings

    try:
        settings = CoreSettings()
    except ValidationError as exc:
        raise fail(escape(f"invalid settings:\n{exc}")) from None
    folder = source or settings.log_dir
    try:
        if folder is None:
            raise logbackup.BackupError("no log folder: pass --source or set PZONE_LOG_DIR")
        logbackup.check_source(folder)
        host = logbackup.check_host_label(host_label or logbackup.default_host_label())
        try:
            key_prefix = logbackup.normalize_prefix(prefix)
        except ValueError as exc:
            raise logbackup.BackupError(f"bad --prefix: {exc}") from None
        name = bucket or settings.s3_bucket or ""
        client = logbackup.s3_client(settings.s3_endpoint_url, settings.s3_region)
        logbackup.check_bucket(client, name)
    except logbackup.BackupError as exc:
        raise fail(escape(str(exc))) from None

    def show(result: logbackup.FileResult) -> None:
        path = escape(result.file.path.as_posix())
        deleted = " [dim](local file deleted)[/dim]" if result.deleted and not dry_run else ""
        deleted = " [dim](would delete the local file)[/dim]" if result.deleted and dry_run else deleted
        if result.outcome is logbackup.Outcome.FAILED:
            console.print(f"[red]failed[/red]   {path}: {escape(result.detail)}")
        elif result.outcome is logbackup.Outcome.SKIPPED:
            console.print(f"[dim]skipped[/dim]  {path} (already in S3){deleted}")
        else:
            verb = "would upload" if dry_run else "uploaded"
            console.print(f"[green]{verb}[/green] {path} → {escape(result.key)}{deleted}")

    report = logbackup.backup_logs(
        client,
        name,
        folder,
        host=host,
        prefix=key_prefix,
        delete_uploaded=delete_uploaded,
        include_active=include_active,
        min_age_s=min_age_s,
        dry_run=dry_run,
        on_result=show,
    )
    colour = "red" if report.failed else "green"
    console.print(f"[{colour}]logs backup:[/{colour}] {escape(report.summary())}")
    if report.failed:
        raise typer.Exit(code=1)

"""``pzone db``: the database schema (Alembic migrations) on PZONE_DATABASE_URL."""

from __future__ import annotations

from typing import Annotated

import typer

from pzone.cli.common import console

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply the schema migrations to PZONE_DATABASE_URL (SQLite in PZONE_DATA_DIR by default)."""
    from pzone.db.engine import safe_url
    from pzone.migrations import current, upgrade
    from pzone.settings import CoreSettings

    url = CoreSettings().sqlalchemy_url
    upgrade(url, revision)
    console.print(f"database {safe_url(url)} at revision [bold]{current(url)}[/bold]")


@db_app.command("current")
def db_current() -> None:
    """Print the schema revision the database is at."""
    from pzone.migrations import current
    from pzone.settings import CoreSettings

    console.print(current(CoreSettings().sqlalchemy_url) or "empty (no migrations applied)")

"""The API's commands: ``pzone api``, ``pzone user create``, ``pzone photos worker``, ``pzone dataset import`` (the
``pzone.commands`` plugin; the ``dataset`` group is shared with other packages).

The same image runs them all (the photo worker is the API's queue consumer; an import goes through the API's
intake), so they live with the API.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer
from rich.markup import escape

from pzone.cli.common import console, fail, schema_behind, settings_or_fail
from pzone_api.settings import Settings

user_app = typer.Typer(help="Accounts of the web front.", no_args_is_help=True)
photos_app = typer.Typer(help="Photo processing (the worker behind the API).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    from pzone.cli.root import command_group
    from pzone_api.dataset_import.command import import_photos

    app.command()(api)
    user_app.command("create")(user_create)
    photos_app.command("worker")(photos_worker)
    app.add_typer(photos_app, name="photos")
    app.add_typer(user_app, name="user")
    command_group(app, "dataset").command("import")(import_photos)


def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on.")] = 8000,
) -> None:
    """Run the web front's JSON API (FastAPI under uvicorn); migrations are not applied, see `pzone db upgrade`."""
    settings = settings_or_fail(Settings)
    import uvicorn

    from pzone.db.engine import safe_url
    from pzone_api.main import create_app

    url = settings.sqlalchemy_url
    behind = schema_behind(url)
    if behind:
        console.print(f"[yellow]hint:[/yellow] {escape(behind)}; run [bold]pzone db upgrade[/bold] first")
    if settings.cookie_secure and host not in ("127.0.0.1", "localhost", "::1"):
        console.print(
            "[yellow]hint:[/yellow] session cookies are Secure: browsers keep them over HTTPS only (or on "
            "localhost); serve behind TLS, or set PZONE_COOKIE_SECURE=false for a trusted plain-HTTP network"
        )
    console.print(f"database: {escape(safe_url(url))}; API docs: http://{host}:{port}/docs")
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None)


class Role(StrEnum):
    client = "client"
    operator = "operator"


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        # Only the line end goes: a password may begin or end with spaces.
        return line.removesuffix("\n").removesuffix("\r")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def user_create(
    email: Annotated[str, typer.Option(help="E-mail address, the login name (stored lower-cased).")],
    role: Annotated[Role, typer.Option(help="client photographs; operator also sees the dashboard.")] = (
        Role.client
    ),
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password from the first line of standard input."),
    ] = False,
) -> None:
    """Create an account in PZONE_DATABASE_URL; the password is prompted for (hidden) or read from stdin."""
    settings = settings_or_fail(Settings)
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from pzone.db.engine import make_engine
    from pzone_api.security import EmailTaken, InvalidEmail, WeakPassword, create_user, normalize_email

    try:  # check the address before asking for a password
        normalize_email(email)
    except InvalidEmail as exc:
        raise fail(f"invalid email: {escape(str(exc))}") from None
    password = _read_password(password_stdin)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            user = create_user(session, email, password, role.value)
            session.commit()
    except InvalidEmail as exc:
        raise fail(f"invalid email: {escape(str(exc))}") from None
    except WeakPassword as exc:
        raise fail(f"weak password: {escape(str(exc))}") from None
    except EmailTaken as exc:
        raise fail(f"an account with the email {escape(str(exc))} exists already") from None
    except SQLAlchemyError as exc:
        behind = schema_behind(settings.sqlalchemy_url)
        hint = f"\nhint: {behind}; run pzone db upgrade" if behind else ""
        raise fail(escape(f"database error: {str(exc).splitlines()[0][:300]}{hint}")) from None
    finally:
        engine.dispose()
    console.print(f"created {user.role} [bold]{escape(user.email)}[/bold] (id {user.id})")


def photos_worker(
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker threads (the image work releases the GIL mostly).")
    ] = 1,
    shutdown_timeout: Annotated[
        float, typer.Option(min=0.0, help="Seconds a SIGTERM waits for the photos in hand.")
    ] = 30.0,
) -> None:
    """Process uploaded photos from the queue (PZONE_REDIS_URL): checks, SHA-256, original, thumbnails, verdict.

    Same settings as the API (PZONE_*). SIGTERM finishes the photos in hand, then exits; SIGINT stops at once.
    """
    settings = settings_or_fail(Settings)
    if settings.redis_url is None or settings.processing_in_api:
        raise fail(
            "no queue to work on: set PZONE_REDIS_URL (without it, or with PZONE_PROCESSING_IMMEDIATE=true, the "
            "API processes photos itself)"
        )
    from pzone.db.engine import make_engine, safe_url
    from pzone.storage import object_store_from_settings
    from pzone_api.processing import photo_queue_from_settings

    engine = make_engine(settings.sqlalchemy_url)
    queue = photo_queue_from_settings(settings, engine, object_store_from_settings(settings))
    console.print(
        f"photo worker: queue {settings.processing_queue_name!r}, {workers} thread(s), database "
        f"{escape(safe_url(settings.sqlalchemy_url))}"
    )
    try:
        queue.consumer(workers, graceful_signal="TERM", shutdown_timeout=shutdown_timeout).run()
    finally:
        queue.close()
        engine.dispose()

"""What every package's commands share: the console, error exits, settings from the environment, stop signals.

Every plugin's command module imports these, so that every ``pzone`` command fails the same
way (``error: ...`` and exit code 2 for what the user can fix) and stops the same way on SIGTERM/SIGINT.
:func:`run_cli` (the ``pzone`` command) and :func:`run_command` (each `dvc repro` stage) turn an error that reaches
the top into ``error: <one line>`` and a hint with exit code 1 — a known one (:class:`pzone.errors.UserError`, invalid
settings, a database that is missing, unreachable or behind) into its own sentence — and show the traceback only
with ``PZONE_DEBUG=1`` (``pzone --debug``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from rich.console import Console
from rich.markup import escape

from pzone.errors import UserError, one_line

console = Console()
error_console = Console(stderr=True)

DEBUG_ENV = "PZONE_DEBUG"
DEBUG_HINT = (
    f"an unexpected error: run again with {DEBUG_ENV}=1 (or `pzone --debug`) to see where it happened"
)

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` (rich markup: escape what the user typed) and return the exit to raise (code 2)."""
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def settings_or_fail(settings_class: type[SettingsT], **overrides: Any) -> SettingsT:
    """``settings_class`` from the environment plus the options given (None: not given); a clear error if invalid."""
    try:
        return settings_class(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise fail(escape(f"invalid settings:\n{exc}")) from exc


def debug_enabled() -> bool:
    """Whether tracebacks are wanted (``PZONE_DEBUG`` set to 1/true/yes/on)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def explain(error: BaseException) -> tuple[str, str]:
    """The one-line sentence and the hint for an error that reached the top of a command."""
    if isinstance(error, UserError):
        return one_line(error, 1000), error.hint or ""
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'value'}: {item['msg']}"
            for item in error.errors()
        )
        return f"invalid settings: {problems}", "see the PZONE_* variables in docs/architecture.md"
    from sqlalchemy.exc import DBAPIError

    if isinstance(error, DBAPIError):
        problem = _database_problem()
        if problem is not None:
            return one_line(problem, 1000), problem.hint or ""
        return f"the database refused a statement: {one_line(error.orig or error)}", DEBUG_HINT
    return f"{type(error).__name__}: {one_line(error)}", DEBUG_HINT


def _database_problem() -> UserError | None:
    """Why the configured database cannot be read (missing, unreachable, behind), found without writing; never
    raises."""
    from pzone.db.readonly import DatabaseUnavailable, check_readable, read_only_engine
    from pzone.settings import CoreSettings

    try:
        url = CoreSettings().sqlalchemy_url
        engine = read_only_engine(url)
        try:
            with _quiet_alembic():
                check_readable(url, engine)
        finally:
            engine.dispose()
    except DatabaseUnavailable as problem:
        return problem
    except Exception:  # the diagnosis is best effort: the caller falls back to the error itself
        return None
    return None


def report(error: BaseException) -> None:
    """Print ``error: <sentence>`` and ``hint: …`` on stderr, unwrapped (one line each, whatever the width)."""
    message, hint = explain(error)
    error_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    if hint:
        error_console.print(f"hint: {escape(hint)}", soft_wrap=True, highlight=False)


def run_cli(app: typer.Typer, args: Sequence[str] | None = None) -> NoReturn:
    """Run ``app`` as a program: its exit code, and for an error that escapes it :func:`report` and exit code 1
    (with ``PZONE_DEBUG=1`` the error propagates, and typer prints its traceback)."""
    try:
        app(args=list(args) if args is not None else None)
    except Exception as error:
        if debug_enabled():
            raise
        report(error)
        raise SystemExit(1) from None
    raise SystemExit(0)


def run_command(function: Callable[..., Any], args: Sequence[str] | None = None) -> NoReturn:
    """``typer.run(function)`` through :func:`run_cli`: how every `dvc repro` stage's module runs its ``main``."""
    app = typer.Typer(add_completion=False)
    app.command()(function)
    run_cli(app, args)


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic's INFO lines (some at import) would drown a hint."""
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        alembic_log.setLevel(level)


def schema_behind(url: str) -> str | None:
    """Why the database is not at the newest migration (None when it is), for hints; never raises."""
    with _quiet_alembic():
        try:
            from alembic.script import ScriptDirectory

            from pzone.migrations import alembic_config, current

            head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
            at = current(url)
        except Exception as exc:  # unreachable database, bad URL: the hint says so, the caller goes on
            return (
                f"could not read the schema revision ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            )
    if at == head:
        return None
    return f"the database is at revision {at or 'none (empty)'}, the code expects {head}"


def stop_on_signals(stop: threading.Event, grace_s: float | None = None) -> None:
    """SIGTERM and SIGINT set ``stop``; with ``grace_s``, a drain that takes longer than that ends the process."""

    def handler(signum: int, _frame: Any) -> None:
        logging.getLogger("pzone").info("%s: draining and stopping", signal.Signals(signum).name)
        stop.set()
        if grace_s is not None:
            # A drain that does not finish in time must not hang the process (nothing is lost: what was not
            # acknowledged comes back from the broker). The stacks show where it was stuck.
            watchdog = threading.Timer(grace_s, _give_up, args=(grace_s,))
            watchdog.daemon = True
            watchdog.start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _give_up(grace_s: float) -> None:
    import faulthandler
    import sys

    print(
        f"drain did not finish within {grace_s:g}s: exiting; unacknowledged messages stay with the broker",
        file=sys.stderr,
        flush=True,
    )
    faulthandler.dump_traceback(all_threads=True)
    os._exit(3)

"""What every package's commands share: the console, error exits, settings from the environment, stop signals.

Every plugin's command module imports these, so that every ``pzone`` command fails the same
way (``error: ...`` and exit code 2 for what the user can fix) and stops the same way on SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from rich.console import Console
from rich.markup import escape

console = Console()

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


def schema_behind(url: str) -> str | None:
    """Why the database is not at the newest migration (None when it is), for hints; never raises."""
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)  # its INFO lines (some at import) would drown the hint
    try:
        from alembic.script import ScriptDirectory

        from pzone.migrations import alembic_config, current

        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        at = current(url)
    except Exception as exc:  # unreachable database, bad URL: the hint says so, the caller goes on
        return f"could not read the schema revision ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    finally:
        alembic_log.setLevel(level)
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

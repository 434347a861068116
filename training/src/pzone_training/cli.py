"""The training package's command, ``pzone promote`` (the ``pzone.commands`` plugin of pzone-training)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from pzone_training.promote import command

    app.command("promote")(command)

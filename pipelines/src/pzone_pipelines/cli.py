"""The trainer's command, ``pzone retrain`` (the ``pzone.commands`` plugin of pzone-pipelines)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from pzone_pipelines.retrain.command import command

    app.command("retrain")(command)

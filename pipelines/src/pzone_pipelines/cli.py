"""The pipelines package's commands (the ``pzone.commands`` plugin of pzone-pipelines): ``pzone retrain``,
``pzone dataset pull`` (the ``dataset`` group is shared with pzone-stack and pzone-api), ``pzone compare`` and
``pzone lineage``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from pzone.cli.root import command_group
    from pzone_pipelines.compare import command as compare
    from pzone_pipelines.dataset_pull import command as pull
    from pzone_pipelines.lineage.command import lineage_app
    from pzone_pipelines.retrain.command import command

    app.command("retrain")(command)
    command_group(app, "dataset").command("pull")(pull)
    app.command("compare")(compare)
    app.add_typer(lineage_app, name="lineage")

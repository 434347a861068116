"""The local stack's commands: ``pzone up``, ``pzone demo``, ``pzone simulate``, ``pzone dataset seed`` (the
``pzone.commands`` plugin; the ``dataset`` group is shared with pzone-pipelines)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from pzone.cli.root import command_group
    from pzone_stack.dataset_seed import seed
    from pzone_stack.demo.command import command as demo
    from pzone_stack.simulate import simulate_app
    from pzone_stack.up import up

    app.command("up")(up)
    app.command("demo")(demo)
    app.add_typer(simulate_app, name="simulate")
    command_group(app, "dataset").command("seed")(seed)

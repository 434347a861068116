"""The local stack's commands: ``pzone up``, ``pzone demo``, ``pzone simulate`` (the ``pzone.commands`` plugin)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from pzone_stack.demo.command import command as demo
    from pzone_stack.simulate import simulate_app
    from pzone_stack.up import up

    app.command("up")(up)
    app.command("demo")(demo)
    app.add_typer(simulate_app, name="simulate")

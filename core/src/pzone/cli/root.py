"""The ``pzone`` command's root: logging options, core's own commands, and the commands of installed packages.

Core knows none of the other packages. Each package that has commands declares an entry point in the group
``pzone.commands`` naming a ``register(app)`` function, which adds its commands to the root; so an image that
installs only its own package (plus core) has exactly that package's commands, and `pzone --help` on a developer's
machine, where the whole workspace is installed, lists them all. Several packages may add commands to one group
(``pzone dataset …``) through :func:`command_group`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from pzone.cli.common import DEBUG_ENV, fail, run_cli
from pzone.cli.db import db_app
from pzone.cli.logs import logs_app

PLUGIN_GROUP = "pzone.commands"

app = typer.Typer(
    help="P-ZONE: tilt telemetry, photos, training and serving in one circle.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(logs_app, name="logs")


@app.callback()
def _setup(
    ctx: typer.Context,
    log_level: Annotated[
        str, typer.Option(help="Logging level: DEBUG, INFO, WARNING.", envvar="PZONE_LOG_LEVEL")
    ] = ("INFO"),
    log_dir: Annotated[
        Path | None,
        typer.Option(
            help="Also log to rotating files <command>-<hostname>.log in this folder (rotated hourly and on "
            "exit; see `pzone logs backup`).",
            envvar="PZONE_LOG_DIR",
        ),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help=f"Show the traceback of an unexpected error (also {DEBUG_ENV}=1).",
            envvar=DEBUG_ENV,
        ),
    ] = False,
) -> None:
    from rich.logging import RichHandler

    if debug:
        os.environ[DEBUG_ENV] = "1"  # read where an error is reported, and by the stages a command starts

    logging.basicConfig(
        level=log_level.upper(),
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )
    if log_dir is not None:
        from pzone.logfiles import install_file_logging

        try:
            install_file_logging(log_dir, ctx.invoked_subcommand or "pzone", log_level)
        except OSError as exc:
            raise fail(escape(f"cannot write log files in {log_dir}: {exc}")) from None


class PluginConflict(RuntimeError):
    """Two packages (or a package and core) register a command under the same name."""


def _names(commands: list[Any], groups: list[Any]) -> list[str]:
    named = [info.name or (info.callback.__name__ if info.callback else "") for info in commands]
    named += [info.name or "" for info in groups]
    return [name.replace("_", "-") for name in named if name]


def command_names(target: typer.Typer) -> set[str]:
    """The names of ``target``'s top-level commands and groups, as typer will name them."""
    return set(_names(target.registered_commands, target.registered_groups))


# Groups that several packages add commands to, and their help (one spelling, whichever package loads first).
SHARED_GROUPS = {
    "dataset": "The training dataset: seed a local one, pull the one a model trained on, import your photos.",
}


def command_group(target: typer.Typer, name: str) -> typer.Typer:
    """The group ``name`` of ``target``, created on first use (help from :data:`SHARED_GROUPS`): how several
    plugins add commands to one group. A command (not a group) of that name is a :class:`PluginConflict`."""
    for info in target.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    if name in _names(target.registered_commands, []):
        raise PluginConflict(f"{name} is a command, not a group of commands")
    group = typer.Typer(help=SHARED_GROUPS.get(name), no_args_is_help=True)
    target.add_typer(group, name=name)
    return group


def _group_clashes(target: typer.Typer) -> list[str]:
    """``group command`` for every command name a group of ``target`` holds twice."""
    clashes = []
    for info in target.registered_groups:
        if info.typer_instance is None:
            continue
        inner = info.typer_instance
        names = _names(inner.registered_commands, inner.registered_groups)
        clashes += [f"{info.name} {dup}" for dup in sorted({n for n in names if names.count(n) > 1})]
    return clashes


def register_plugins(target: typer.Typer, plugins: list[tuple[str, Callable[[typer.Typer], None]]]) -> None:
    """Let each plugin add its commands to ``target``; a name registered twice (at the top or inside a shared
    group) is an error, not a silent shadow."""
    for name, register in plugins:
        before = command_names(target)
        commands, groups = len(target.registered_commands), len(target.registered_groups)
        register(target)
        added = _names(target.registered_commands[commands:], target.registered_groups[groups:])
        clashes = sorted(set(added) & before | {a for a in added if added.count(a) > 1})
        clashes += _group_clashes(target)
        if clashes:
            raise PluginConflict(f"the plugin {name!r} registers {', '.join(clashes)} again")


def installed_plugins() -> list[tuple[str, Callable[[typer.Typer], None]]]:
    """(name, register) of every ``pzone.commands`` entry point installed, by name: the order `--help` follows."""
    found: list[EntryPoint] = sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)
    plugins = []
    for entry in found:
        try:
            plugins.append((entry.name, entry.load()))
        except ImportError as exc:  # a broken install must not take the other commands down with it
            print(f"pzone: the commands of {entry.value} are unavailable: {exc}", file=sys.stderr)
    return plugins


_loaded = False


def load_plugins() -> typer.Typer:
    """The root app with every installed package's commands (once per process); returns it."""
    global _loaded
    if not _loaded:
        _loaded = True
        register_plugins(app, installed_plugins())
    return app


def main() -> None:
    run_cli(load_plugins())

"""The `pzone` command is assembled from plugins: each package registers its commands through `pzone.commands`."""

from __future__ import annotations

import os
from importlib.metadata import EntryPoint

import pytest
import typer
from typer.testing import CliRunner

from pzone.cli import app as core_app
from pzone.cli.root import (
    PLUGIN_GROUP,
    SHARED_GROUPS,
    PluginConflict,
    command_group,
    command_names,
    installed_plugins,
    register_plugins,
)
from tests.support.cli import pzone

pytestmark = pytest.mark.unit


def fresh_root() -> typer.Typer:
    root = typer.Typer()
    root.command("db")(lambda: None)
    return root


def test_plugins_add_their_commands_and_groups() -> None:
    def ingest(app: typer.Typer) -> None:
        @app.command()
        def ingest_now() -> None:
            print("ingesting")

    def api(app: typer.Typer) -> None:
        users = typer.Typer()
        users.command("create")(lambda: print("created"))
        app.add_typer(users, name="user")

    root = fresh_root()
    register_plugins(root, [("ingest", ingest), ("api", api)])
    assert command_names(root) == {"db", "ingest-now", "user"}
    assert CliRunner().invoke(root, ["ingest-now"]).stdout == "ingesting\n"
    assert CliRunner().invoke(root, ["user", "create"]).stdout == "created\n"


@pytest.mark.parametrize("clash", ["db", "user"])
def test_a_name_registered_twice_is_an_error_not_a_shadow(clash: str) -> None:
    def first(app: typer.Typer) -> None:
        app.add_typer(typer.Typer(), name="user")

    def second(app: typer.Typer) -> None:
        app.command(clash)(lambda: None)

    with pytest.raises(PluginConflict, match=f"'second' registers {clash} again"):
        register_plugins(fresh_root(), [("first", first), ("second", second)])


def test_plugins_share_a_command_group() -> None:
    def stack(app: typer.Typer) -> None:
        command_group(app, "dataset").command("seed")(lambda: print("seeded"))

    def pipelines(app: typer.Typer) -> None:
        group = command_group(app, "dataset")
        group.command("pull")(lambda: print("pulled"))
        group.command("import")(lambda: print("imported"))

    root = fresh_root()
    register_plugins(root, [("pipelines", pipelines), ("stack", stack)])
    assert command_names(root) == {"db", "dataset"}  # one group, not two
    runner = CliRunner()
    for command, said in (("seed", "seeded"), ("pull", "pulled"), ("import", "imported")):
        assert runner.invoke(root, ["dataset", command]).stdout == f"{said}\n"
    assert SHARED_GROUPS["dataset"][:40] in runner.invoke(root, ["dataset", "--help"]).stdout


def test_a_command_twice_in_a_shared_group_is_an_error() -> None:
    def first(app: typer.Typer) -> None:
        command_group(app, "dataset").command("pull")(lambda: None)

    def second(app: typer.Typer) -> None:
        command_group(app, "dataset").command("pull")(lambda: None)

    with pytest.raises(PluginConflict, match="'second' registers dataset pull again"):
        register_plugins(fresh_root(), [("first", first), ("second", second)])
    with pytest.raises(PluginConflict, match="db is a command, not a group"):
        command_group(fresh_root(), "db")


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_still_load(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    found = [
        EntryPoint("broken", "pzone_no_such_package.cli:register", PLUGIN_GROUP),
        EntryPoint("core-db", "pzone.cli.db:db_app", PLUGIN_GROUP),
    ]
    monkeypatch.setattr("pzone.cli.root.entry_points", lambda group: found if group == PLUGIN_GROUP else [])
    loaded = installed_plugins()
    assert [name for name, _ in loaded] == ["core-db"]
    assert "the commands of pzone_no_such_package.cli:register are unavailable" in capsys.readouterr().err


def test_every_workspace_package_with_commands_registers_them() -> None:
    names = {name for name, _ in installed_plugins()}
    assert names == {"api", "ingest", "retrain", "stack", "training"}
    assert {"db", "logs"} <= command_names(core_app)  # core's own (with only core installed: tests/house)


@pytest.mark.integration
def test_the_installed_command_lists_every_packages_commands() -> None:
    env = {**os.environ, "COLUMNS": "200"}
    result = pzone("--help", env=env)
    assert result.returncode == 0, result.stderr
    for command in (
        "db",
        "logs",
        "ingest",
        "api",
        "user",
        "photos",
        "retrain",
        "up",
        "demo",
        "simulate",
        "dataset",
        "lineage",
        "compare",
    ):
        assert f"│ {command} " in result.stdout, command

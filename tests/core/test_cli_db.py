"""`pzone db`: `upgrade` migrates the default SQLite file to head, `current` says where a database stands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from pzone.migrations import alembic_config
from tests.support.cli import pzone

pytestmark = pytest.mark.integration


def test_db_upgrade_on_sqlite_and_current(tmp_path: Path) -> None:
    env = {**os.environ, "PZONE_DATA_DIR": str(tmp_path)}
    assert pzone("db", "current", env=env).stdout.strip().startswith("empty")
    done = pzone("db", "upgrade", env=env)
    assert done.returncode == 0, done.stderr
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None and head in done.stdout and (tmp_path / "pzone.db").exists()
    assert pzone("db", "current", env=env).stdout.strip() == head

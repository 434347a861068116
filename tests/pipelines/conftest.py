"""Fixtures of the data pipeline's tests (``pzone_pipelines``: the stages, `dvc repro`, the DVC remote,
`pzone retrain`, `pzone lineage`) beyond tests/conftest.py's, under a heading naming the module that uses them."""

from __future__ import annotations

import pytest

from tests.support.lineage import LineageWorld, build_world

# --- `pzone lineage` (tests/pipelines/test_lineage.py) ---


@pytest.fixture(scope="session")
def lineage_world(tmp_path_factory: pytest.TempPathFactory) -> LineageWorld:
    """A platform and an MLflow store holding lineage records and registered versions (no training; read only:
    tests copy nothing and write nothing into it)."""
    return build_world(tmp_path_factory.mktemp("lineage") / ".pzone")

"""The test session's own BentoML store: never the user's, emptied for each test that uses it (public API only).

BentoML reads ``BENTOML_HOME`` once, at a process's first store access, and its public API cannot switch stores
afterwards. So tests/conftest.py points the variable at a private folder before any test module runs
(:func:`use_private_store`), a test that works with the store in this process starts from :func:`fresh_store`, and a
subprocess that needs a store of its own gets it through ``BENTOML_HOME`` in its environment.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_HOME: Path | None = None


def use_private_store() -> Path:
    """Point this process (and the subprocesses it starts) at a new, private BentoML store; once per session."""
    global _HOME
    if _HOME is None:
        _HOME = Path(tempfile.mkdtemp(prefix="pzone-test-bentoml-"))
        os.environ["BENTOML_HOME"] = str(_HOME)
        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    return _HOME


def remove_private_store() -> None:
    if _HOME is not None:
        shutil.rmtree(_HOME, ignore_errors=True)


def fresh_store() -> Path:
    """This process's BentoML store, emptied (no Bento, no model); its folder, to hand to a subprocess."""
    import bentoml

    home = use_private_store()
    for bento in bentoml.bentos.list():
        bentoml.bentos.delete(str(bento.tag))
    for model in bentoml.models.list():
        bentoml.models.delete(str(model.tag))
    return home

"""The model tier's BentoML entry point: the service that ``bentoml serve`` and ``bentoml build`` run at the
repository root (bentofile.yaml's ``service``), from the workspace or from a built Bento's own source.

The tier's sources keep the repository's layout, here and inside a Bento (bentofile.yaml's ``include`` copies them
as they are). Their source folders go first on the import path, so a Bento runs its own copy with nothing of the
workspace installed, only the Bento's Python packages; in the workspace they are the folders its editable installs
point at. The service itself is :data:`pzone_model.SERVICE`.
"""

import sys
from pathlib import Path

# Relative to this file; every file bentofile.yaml includes but this one lies under one of them (a house test).
SOURCE_FOLDERS = ("serving/model/src", "core/src")

_HERE = Path(__file__).resolve().parent
for _folder in reversed(SOURCE_FOLDERS):
    if str(_HERE / _folder) not in sys.path:
        sys.path.insert(0, str(_HERE / _folder))

from pzone_model.service import PZoneTilt  # noqa: E402 - the source folders must be on the path first

__all__ = ["SOURCE_FOLDERS", "PZoneTilt"]

"""P-ZONE model tier: the BentoML service that serves the champion tilt classifier (ONNX Runtime).

:data:`SERVICE` is the service's import path, what ``bentoml serve`` takes where this package is installed (the
images, the demo); at the repository root ``uv run bentoml serve`` runs it through bentofile.yaml and the root
``service.py``. Importing this package imports no bentoml, so a launcher (the demo, the tests, the benchmark) may
name it without loading the server.
"""

from __future__ import annotations

import sys

# The Dockerfile's pzone-model CMD and docker-compose.yml's model command spell it too, and the repository root's
# service.py (bentofile.yaml's `service`) exposes this class (tests/house/test_contracts.py holds them to this).
SERVICE = "pzone_model.service:PZoneTilt"

__all__ = ["SERVICE", "serve_command"]


def serve_command(target: str = SERVICE) -> list[str]:
    """``bentoml serve`` of ``target`` (the service's import path, a project folder with a bentofile.yaml such as
    the repository root, or a Bento's tag or folder) by this interpreter; the caller adds ``--host`` and
    ``--port``."""
    return [sys.executable, "-m", "bentoml", "serve", target]

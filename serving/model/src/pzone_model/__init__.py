"""P-ZONE model tier: the BentoML service that serves the champion tilt classifier (ONNX Runtime).

:data:`SERVICE` is what ``bentoml serve`` takes to run it from sources; importing this package imports no bentoml,
so a launcher (the demo, the tests, the benchmark) may name it without loading the server.
"""

from __future__ import annotations

import sys

# bentofile.yaml's `service`, the Dockerfile's pzone-model CMD and docker-compose.yml's model command spell it too
# (tests/house/test_contracts.py holds them to this).
SERVICE = "pzone_model.service:PZoneTilt"

__all__ = ["SERVICE", "serve_command"]


def serve_command(target: str = SERVICE) -> list[str]:
    """``bentoml serve`` of ``target`` (the service from sources, or a Bento's tag or folder) by this interpreter;
    the caller adds ``--host`` and ``--port``."""
    return [sys.executable, "-m", "bentoml", "serve", target]

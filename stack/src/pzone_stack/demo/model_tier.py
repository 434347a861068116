"""The model tier as a subprocess of the demo: `bentoml serve` in its own process group, stopped as a whole."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from pzone_model import serve_command


class ModelTier:
    """`bentoml serve` of the model tier's service (:data:`pzone_model.SERVICE`) in its own process group (stopped
    as a whole)."""

    def __init__(self, port: int, env: Mapping[str, str], log_path: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._env, self.log_path = dict(env), log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*serve_command(), "--host", "127.0.0.1", "--port", str(self.port)],
            env=self._env,
            cwd=self.log_path.parent,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our Ctrl-C handling stops it; the terminal's SIGINT does not race us
        )
        log_file.close()

    def ready(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def exited(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        pgid = self.process.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass

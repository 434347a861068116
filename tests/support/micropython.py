"""Real MicroPython for the firmware's tests: its WebAssembly port from npm (tools/micropython/run.mjs) under Node.js.

The board modules go into the interpreter's file system where the README's flashing steps put them on the board
(/lib/pzone_firmware), next to the in-memory board of tests/firmware/micropython/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO

TOOL = REPO / "tools" / "micropython"
RUNNER = TOOL / "run.mjs"
PACKAGE = TOOL / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
INSTALL = "npm ci --prefix tools/micropython --no-audit --no-fund"
FIRMWARE_SRC = REPO / "firmware" / "src" / "pzone_firmware"
# What the README's flashing steps copy to the board's /lib/pzone_firmware.
BOARD_MODULES = (
    "__init__.py",
    "app.py",
    "wire.py",
    "config.py",
    "delivery.py",
    "hal.py",
    "mpu6050.py",
    "hal_micropython.py",
)
DEVICE_SCRIPTS = (REPO / "firmware" / "device" / "boot.py", REPO / "firmware" / "device" / "main.py")
HARNESS = REPO / "tests" / "firmware" / "micropython"


def micropython_command() -> list[str]:
    """The command that runs a script on MicroPython: skips without Node.js, fails without the npm package."""
    node = shutil.which("node")
    if node is None:
        pytest.skip(
            "Node.js is not installed: MicroPython (tools/micropython, WebAssembly from npm) needs `node`"
        )
    if not PACKAGE.is_dir():
        pytest.fail(f"MicroPython's npm package is missing: run `{INSTALL}`")
    return [node, str(RUNNER)]


def run_micropython(
    command: Sequence[str],
    script: Path,
    *args: str,
    files: Mapping[str, Sequence[Path]] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` on MicroPython with ``files`` copied in first ({folder in the interpreter: host files})."""
    argv = [*command]
    for folder, paths in (files or {}).items():
        argv += ["--into", folder, *map(str, paths)]
    argv += ["--run", str(script), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO)


def run_board_scenarios(command: Sequence[str], *args: str) -> subprocess.CompletedProcess[str]:
    """tests/firmware/micropython/scenarios.py against the board modules, in one interpreter."""
    return run_micropython(
        command,
        HARNESS / "scenarios.py",
        *args,
        files={
            "/lib/pzone_firmware": [FIRMWARE_SRC / name for name in BOARD_MODULES],
            "/lib": [HARNESS / "memhal.py"],
            "/device": list(DEVICE_SCRIPTS),
        },
    )


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON summary a run printed last."""
    lines = result.stdout.strip().splitlines()
    assert lines, f"no summary printed: {result.stderr}"
    summary = json.loads(lines[-1])
    assert isinstance(summary, dict)
    return summary

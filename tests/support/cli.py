"""The ``pzone`` command as a child process, started from the repository root the way an operator runs it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

from tests.support.paths import REPO


def pzone(
    *args: str, env: Mapping[str, str], stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``pzone ARGS`` with ``env`` as its whole environment (nothing inherited) and ``stdin`` as its input."""
    return subprocess.run(
        [sys.executable, "-m", "pzone.cli", *args],
        input=stdin,
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

"""Where the repository is, for tests and helpers that read its files or run commands from its root."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

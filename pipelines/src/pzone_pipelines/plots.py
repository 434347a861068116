"""Plots the pipeline's reports share: drawn one way wherever they appear."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def draw_confusion(ax: Any, cm: np.ndarray, classes: Sequence[str], title: str) -> None:
    """One confusion matrix (rows actual, columns predicted) on a matplotlib axis, counts written in: the evaluate
    stage's ``reports/confusion.png`` and `pzone compare`'s side-by-side draw it the same way."""
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for (i, j), count in np.ndenumerate(cm):
        dark = count > cm.max() / 2
        ax.text(j, i, str(count), ha="center", va="center", color="white" if dark else "black")
    ax.set_title(f"{title} (n={int(cm.sum())})")

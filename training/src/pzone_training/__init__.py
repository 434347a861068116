"""P-ZONE training: the tilt classifier, its data loading and augmentation, the train and evaluate stages.

Importing the package stays cheap (no torch): the pipelines and the API import ``CLASSES`` from here.
"""

from __future__ import annotations

# Index = label id everywhere (labels.npy, model outputs, reports). Same thresholds as the sensors' states.
CLASSES: tuple[str, ...] = ("upright", "tilted", "fallen")

__all__ = ["CLASSES"]

"""The torch model as the model tier's ONNX graph, and the parity check that the graph answers like torch.

The graph takes what the model tier has after letterboxing: uint8 (N, S, S, 3) in, probabilities out, with the
training's normalization and flip averaging inside (the same numbers ``pzone_training.models.predict`` gives).
Exported with ``torch.onnx.export`` (dynamo, opset 18, dynamic batch axis). Parity: ONNX Runtime against torch,
max |Δp| ≤ 1e-4 and the same class wherever the top two probabilities are further apart than that.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

OPSET = 18
PARITY_ATOL = 1e-4
MAX_PARITY_IMAGES = 2048


class ParityError(RuntimeError):
    """The ONNX graph does not answer like the torch model; nothing was imported."""


@dataclass(frozen=True)
class Parity:
    n_images: int
    max_abs_diff: float
    argmax_mismatches: int
    near_ties: int
    atol: float
    source: str  # which images: the test split, or random ones when it is empty

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.atol and self.argmax_mismatches == 0


def probs_module(model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> nn.Module:
    """uint8 (N, S, S, 3) → probabilities (N, C): ``normalize_batch`` + flip averaging of ``predict``, in-graph."""
    import torch
    from torch import nn

    class Probs(nn.Module):
        mean: torch.Tensor
        std: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = (images.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
            probs = torch.softmax(self.model(x).float(), dim=1)
            return (probs + torch.softmax(self.model(x.flip(3)).float(), dim=1)) / 2

    return Probs().eval()


def export_onnx(model: nn.Module, meta: Mapping[str, Any], path: Path, opset: int = OPSET) -> None:
    """One self-contained .onnx file (no external data), batch axis dynamic, spatial size fixed."""
    import torch

    from pzone_model.runtime import INPUT_NAME, OUTPUT_NAME

    size = int(meta["image_size"])
    wrapped = probs_module(model, tuple(meta["mean"]), tuple(meta["std"]))
    # Batch 2: torch.export specializes a size-1 dimension, and the batch must stay dynamic.
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096)}},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


def parity_images(test_dir: Path, size: int, limit: int = MAX_PARITY_IMAGES) -> tuple[np.ndarray, str]:
    """The test split at the model's size, or seeded random images when there is none."""
    from pzone_training.data import resize_square

    path = test_dir / "images.npy"
    if path.exists():
        images = np.load(path)
        if len(images):
            return resize_square(images[:limit], size), f"{test_dir} ({min(len(images), limit)} images)"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (32, size, size, 3), dtype=np.uint8), "32 random images (no test split)"


def check_parity(
    onnx_path: Path, model: nn.Module, images: np.ndarray, source: str, atol: float = PARITY_ATOL
) -> Parity:
    """ONNX Runtime vs torch (``pzone_training.models.predict`` with flip averaging) on the same images."""
    from pzone_model.runtime import open_session
    from pzone_training.models import predict

    expected = predict(model, images, batch_size=64, flip_tta=True)
    session = open_session(onnx_path, threads=max(1, min(4, os.cpu_count() or 1)))
    got = (
        np.concatenate(
            [session.run(None, {"images": images[i : i + 64]})[0] for i in range(0, len(images), 64)]
        )
        if len(images)
        else np.zeros_like(expected)
    )
    if got.shape != expected.shape:
        raise ParityError(f"the ONNX graph answers {got.shape}, torch {expected.shape}")
    diff = float(np.abs(got - expected).max()) if got.size else 0.0
    top2 = np.sort(expected, axis=1)[:, -2:] if expected.shape[1] > 1 else np.zeros((len(expected), 2))
    decided = (top2[:, 1] - top2[:, 0]) > atol  # a near-tie may flip on rounding alone
    mismatch = got.argmax(axis=1) != expected.argmax(axis=1)
    return Parity(
        n_images=len(images),
        max_abs_diff=diff if math.isfinite(diff) else float("inf"),
        argmax_mismatches=int((mismatch & decided).sum()),
        near_ties=int((~decided).sum()),
        atol=atol,
        source=source,
    )

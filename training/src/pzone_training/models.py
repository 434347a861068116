"""Model architectures, checkpoints (``models/model.pt``) and batch prediction."""

from __future__ import annotations

import contextlib
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pzone.tilt import TILT_CLASSES
from pzone_training.augment import normalize_batch
from pzone_training.params import ARCHS


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class TinyCNN(nn.Module):
    """A small plain CNN, measured to beat mobilenet_v3_small from scratch on a 2-core CPU.

    Dense 3×3 convolutions run far faster on a CPU than depthwise ones; max pooling (not strided convolutions) keeps
    the scooter's one-pixel-thin stem alive through downsampling; and the head sees the global max next to the
    global mean, because the object is small and the mean alone drowns it in background.
    """

    def __init__(
        self, num_classes: int = len(TILT_CLASSES), widths: tuple[int, ...] = (16, 24, 48, 96, 128)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, widths[0], 1), nn.MaxPool2d(2)]
        for cin, cout in pairwise(widths[:-1]):
            layers += [_conv_bn(cin, cout, 1), _conv_bn(cout, cout, 1), nn.MaxPool2d(2)]
        layers.append(_conv_bn(widths[-2], widths[-1], 1))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * widths[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.head(torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1))


def build_model(
    arch: str, num_classes: int = len(TILT_CLASSES), weights_path: Path | str | None = None
) -> nn.Module:
    """A fresh model, optionally started from a state_dict file (a head of another size is left fresh)."""
    model: nn.Module
    if arch == "tiny_cnn":
        model = TinyCNN(num_classes)
    elif arch in ("mobilenet_v3_small", "resnet18"):
        model = torchvision_model(arch, num_classes)
    else:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    if weights_path:
        load_weights(model, weights_path)
    return model


def torchvision_model(arch: str, num_classes: int) -> nn.Module:
    """One of torchvision's architectures, untrained. Imported here only: torchvision loads all of its models and
    ops (and torch's compiler with them), seconds that every stage process would pay for the default tiny_cnn."""
    from torchvision import models as tv_models

    model: nn.Module = getattr(tv_models, arch)(weights=None, num_classes=num_classes)
    return model


def load_weights(model: nn.Module, path: Path | str) -> list[str]:
    """Load matching tensors from a state_dict (or a model.pt checkpoint); returns the keys left at their init."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.state_dict()
    # An ImageNet file has a 1000-class head: keep only the tensors whose shapes fit.
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"{path}: no tensor matches the model's parameters")
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


def save_checkpoint(path: Path | str, model: nn.Module, meta: dict[str, Any]) -> None:
    """``meta`` must hold arch, classes, image_size, mean, std and params; plain types only (weights_only loads)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), **meta}, Path(path))


def load_checkpoint(path: Path | str) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from ``models/model.pt``; ``meta`` is everything but the weights."""
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    meta = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    model = build_model(meta["arch"], len(meta["classes"]))
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return model, meta


@torch.inference_mode()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 64, flip_tta: bool = True) -> np.ndarray:
    """Class probabilities (N, C) for uint8 (N, S, S, 3) images, with the eval preprocessing.

    ``flip_tta`` averages each photo with its mirror image: a mirrored scooter leans as far, so the verdict becomes
    exactly mirror-invariant, and the average is a little more accurate.
    """
    if model.training:
        # A torch.export graph (an MLflow pt2 model) is frozen in eval mode and refuses .eval().
        with contextlib.suppress(NotImplementedError):
            model.eval()
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        x = normalize_batch(images[start : start + batch_size])
        probs = torch.softmax(model(x).float(), dim=1)
        if flip_tta:
            probs = (probs + torch.softmax(model(x.flip(3)).float(), dim=1)) / 2
        out.append(probs.numpy())
    if not out:
        return np.zeros((0, len(TILT_CLASSES)), dtype=np.float32)
    return np.concatenate(out)

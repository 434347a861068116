"""The ``train:`` section of params.yaml as typed dataclasses, and its flat form for MLflow; a bad value is a
:class:`~pzone_pipelines.params.ParamsError` (a sentence, not a stack, when the train stage stops on it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pzone_pipelines.params import ParamsError

ARCHS = ("tiny_cnn", "mobilenet_v3_small", "resnet18")


@dataclass(frozen=True)
class AugmentParams:
    """Label-preserving augmentation: nothing here may turn an upright photo into a tilted one."""

    hflip_p: float = 0.5
    roll_limit_deg: float = 5.0
    brightness_contrast_p: float = 0.3
    # Off by default: measured to stall learning from scratch (a thin stem drowns in noise, blur or a hole), and the
    # photos already carry the camera's blur, noise, JPEG and occluders.
    blur_p: float = 0.0
    noise_p: float = 0.0
    jpeg_p: float = 0.0
    scale_limit: float = 0.1
    shift_limit: float = 0.05
    coarse_dropout_p: float = 0.0

    def __post_init__(self) -> None:
        # Beyond the camera's own roll a rotation changes the true tilt class.
        if not 0.0 <= self.roll_limit_deg <= 5.0:
            raise ParamsError(f"augment.roll_limit_deg must be within [0, 5], got {self.roll_limit_deg}")
        for name in ("hflip_p", "brightness_contrast_p", "blur_p", "noise_p", "jpeg_p", "coarse_dropout_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ParamsError(f"augment.{name} must be a probability, got {value}")
        if not 0.0 <= self.scale_limit < 1.0 or not 0.0 <= self.shift_limit < 0.5:
            raise ParamsError("augment.scale_limit must be in [0, 1) and shift_limit in [0, 0.5)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AugmentParams:
        return cls(**_known(cls, data or {}, "train.augment"))


@dataclass(frozen=True)
class TrainParams:
    arch: str = "tiny_cnn"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    # Class weights = inverse frequency ** power. Measured: the full inverse (1.0) pushes the 20° boundary into
    # "upright" (upright photos at 16–20° become "tilted"); its square root balances the classes' F1 best.
    class_weight_power: float = 0.5
    weights_path: str = ""
    num_threads: int = 0
    # A negative control: train on a seeded permutation of the train labels (val and test keep the truth).
    # Such a model must never pass the gate; the pipeline test uses it.
    shuffle_labels: bool = False
    seed: int = 42
    augment: AugmentParams = field(default_factory=AugmentParams)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ParamsError(f"train.arch must be one of {ARCHS}, got {self.arch!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.num_threads < 0:
            raise ParamsError("train.epochs and batch_size must be ≥ 1, lr > 0, num_threads ≥ 0")

    @classmethod
    def from_dict(cls, train: Mapping[str, Any], seed: int = 42) -> TrainParams:
        data = _known(cls, train, "train")
        data["augment"] = AugmentParams.from_dict(data.get("augment"))
        data.setdefault("seed", seed)
        return cls(**data)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrainParams:
        """From the whole params.yaml: ``base.seed`` and the ``train:`` section."""
        return cls.from_dict(params.get("train") or {}, seed=int((params.get("base") or {}).get("seed", 42)))


def coerce_train_params(params: TrainParams | Mapping[str, Any]) -> TrainParams:
    """Accept the dataclass, the whole params.yaml, or just its ``train:`` section."""
    if isinstance(params, TrainParams):
        return params
    if "train" in params:
        return TrainParams.from_params(params)
    return TrainParams.from_dict(params)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"augment": {"hflip_p": 0.5}}}`` → ``{"train.augment.hflip_p": 0.5}`` (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def train_params_dict(params: TrainParams) -> dict[str, Any]:
    return asdict(params)


def _known(cls: type, data: Mapping[str, Any], section: str) -> dict[str, Any]:
    # A typo in params.yaml should fail the stage, not silently train with a default.
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ParamsError(f"unknown key(s) in {section}: {', '.join(unknown)}")
    return dict(data)

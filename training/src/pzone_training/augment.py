"""Augmentation (albumentations, plus a torchvision equivalent for the benchmark) and normalization.

Every transform keeps the tilt class true: a horizontal flip mirrors the tilt, the rotation stays within the camera's
own roll (≤ 5°), and there are no vertical flips or 90° rotations (they would turn upright into fallen).
"""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from pzone_training.data import PAD_VALUE
from pzone_training.params import AugmentParams

# ImageNet statistics: right for ImageNet weights given as weights_path, harmless from scratch.
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def train_transforms(aug: AugmentParams, seed: int | None = None) -> A.Compose:
    """Albumentations pipeline: ``t(image=uint8 HWC)["image"]`` → normalized float32 CHW tensor."""
    return A.Compose(
        [
            A.HorizontalFlip(p=aug.hflip_p),
            A.Affine(
                rotate=(-aug.roll_limit_deg, aug.roll_limit_deg),
                scale=(1.0 - aug.scale_limit, 1.0 + aug.scale_limit),
                translate_percent=(-aug.shift_limit, aug.shift_limit),
                border_mode=cv2.BORDER_CONSTANT,
                fill=PAD_VALUE,
                p=0.8,
            ),
            A.RandomBrightnessContrast(
                brightness_limit=0.25, contrast_limit=0.25, p=aug.brightness_contrast_p
            ),
            A.GaussianBlur(blur_limit=(3, 5), p=aug.blur_p),
            A.GaussNoise(std_range=(0.02, 0.08), p=aug.noise_p),
            A.ImageCompression(quality_range=(40, 90), p=aug.jpeg_p),
            # Occlusion: a passer-by, a bag, another scooter in front of part of the object.
            A.CoarseDropout(
                num_holes_range=(1, 3),
                hole_height_range=(0.08, 0.2),
                hole_width_range=(0.08, 0.2),
                fill="random_uniform",
                p=aug.coarse_dropout_p,
            ),
            A.Normalize(mean=MEAN, std=STD, max_pixel_value=255.0),
            ToTensorV2(),
        ],
        seed=seed,
    )


def eval_transforms() -> A.Compose:
    return A.Compose([A.Normalize(mean=MEAN, std=STD, max_pixel_value=255.0), ToTensorV2()])


def torchvision_train_transforms(aug: AugmentParams) -> Callable[[np.ndarray], torch.Tensor]:
    """The same augmentation in torchvision.transforms.v2 (for the benchmark): uint8 HWC array → float CHW tensor.

    Seeded through torch's global generator (``torch.manual_seed``), not per pipeline as albumentations is.
    """
    from torchvision.transforms import v2  # the benchmark's only: the stages need not load torchvision

    pipeline = v2.Compose(
        [
            v2.ToImage(),
            v2.RandomHorizontalFlip(p=aug.hflip_p),
            v2.RandomApply(
                [
                    v2.RandomAffine(
                        degrees=aug.roll_limit_deg,
                        translate=(aug.shift_limit, aug.shift_limit),
                        scale=(1.0 - aug.scale_limit, 1.0 + aug.scale_limit),
                        fill=PAD_VALUE,
                    )
                ],
                p=0.8,
            ),
            v2.RandomApply([v2.ColorJitter(brightness=0.25, contrast=0.25)], p=aug.brightness_contrast_p),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=aug.blur_p),
            v2.RandomApply([v2.JPEG(quality=(40, 90))], p=aug.jpeg_p),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomApply([v2.GaussianNoise(sigma=0.05)], p=aug.noise_p),
            v2.Normalize(mean=list(MEAN), std=list(STD)),
            v2.RandomErasing(p=aug.coarse_dropout_p, scale=(0.01, 0.04), value="random"),
        ]
    )

    def apply(image: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(pipeline(image))

    return apply


def normalize_batch(images: np.ndarray) -> torch.Tensor:
    """Vectorized eval preprocessing of a uint8 (N, S, S, 3) batch; identical to ``eval_transforms()``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std

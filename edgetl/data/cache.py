"""Decoded images, cached: each photo decoded and resized once, then read back as an array.

    cache = ImageCache()                         # ~/.cache/edgetl/images (EDGETL_CACHE_DIR)
    img = cache.load(path, preprocess)           # PIL RGB, resized to preprocess.resize
    good = validate(samples, preprocess, cache)  # unreadable files skipped with one warning
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from .._io import atomic_path
from ..errors import DataError, RuntimeInputError
from ..runtime.preprocess import Preprocess, load_image
from .imagefolder import Sample

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGETL_CACHE", Path.home() / ".cache" / "edgetl"))


class ImageCache:
    """Decoded images as .npy files on disk: resized to the preprocessing's shorter side (what augmentation
    crops from), or, with ``frame=True``, the model's frame itself (``Preprocess.frame``: exactly what the
    device computes, so every evaluation, calibration and parity tensor is the device's).

    Keyed by absolute path, mtime, size, the preprocessing's resize, crop, interpolation and resampler and the kind,
    so an edited photo or a backbone with other preprocessing never reads a stale entry.
    """

    def __init__(self, root: Path | None = None, enabled: bool = True):
        self.root = Path(root or default_cache_dir()) / "images"
        self.enabled = enabled

    def key(self, path: Path, pp: Preprocess, frame: bool = False) -> Path:
        st = path.stat()
        kind = f"frame{pp.crop}" if frame else "resized"
        how = pp.interpolation if pp.resampler == "pillow" else f"{pp.interpolation}|{pp.resampler}"
        raw = f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{pp.resize}|{how}|{kind}|v3"
        h = hashlib.sha1(raw.encode()).hexdigest()
        return self.root / h[:2] / f"{h}.npy"

    @staticmethod
    def _make(path: Path, pp: Preprocess, frame: bool) -> Image.Image:
        img = load_image(path)
        return Image.fromarray(pp.frame(img)) if frame else pp.resize_image(img)

    def load(self, path: Path, pp: Preprocess, *, frame: bool = False) -> Image.Image:
        """The image resized to ``pp.resize`` (``frame``: the model's crop x crop frame), decoding only on
        a cache miss."""
        if not self.enabled:
            return self._make(path, pp, frame)
        k = self.key(path, pp, frame)
        try:
            return Image.fromarray(np.load(k, allow_pickle=False))
        except (FileNotFoundError, ValueError, OSError, EOFError):
            pass
        img = self._make(path, pp, frame)
        k.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(k, durable=False) as tmp:  # a torn entry fails np.load and is decoded again
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(img, dtype=np.uint8), allow_pickle=False)
        return img

    def frames(self, samples: Sequence[Sample], pp: Preprocess) -> np.ndarray:
        """The samples' frames (``Preprocess.frame``): uint8 [N, crop, crop, 3] (``pp.normalize`` makes inputs)."""
        return np.stack([np.asarray(self.load(s.path, pp, frame=True), np.uint8) for s in samples])


def validate(samples: Sequence[Sample], pp: Preprocess, cache: ImageCache, *,
             workers: int | None = None, progress: Callable[[int], None] | None = None,
             where: str = "", frame: bool = False) -> tuple[list[Sample], dict[str, int]]:
    """Decode every sample once (filling the cache: the frames with ``frame``, else the resized images
    augmentation crops from); drop the unreadable ones.

    Returns the readable samples and a reason -> count dict. One warning names the count and
    the first bad file, never one line per file.
    """
    def check(s: Sample):
        try:
            cache.load(s.path, pp, frame=frame)
            return None
        except RuntimeInputError as e:
            return str(e)

    workers = workers or min(4, os.cpu_count() or 1)
    good, bad = [], []
    with ThreadPoolExecutor(workers) as ex:  # PIL decodes with the GIL released
        for s, err in zip(samples, ex.map(check, samples)):
            (bad.append((s, err)) if err else good.append(s))
            if progress:
                progress(1)
    counts = Counter("corrupt or unreadable" for _ in bad)
    if bad:
        log.warning("skipped %d unreadable image(s)%s, e.g. %s", len(bad), f" in {where}" if where else "", bad[0][1])
    if not good:
        raise DataError(f"no readable images{' in ' + where if where else ''}: check the files (first error: {bad[0][1]})")
    return good, dict(counts)


# --- torch side ---------------------------------------------------------------------------

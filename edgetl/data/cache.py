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
    """Decoded images resized to the preprocessing's shorter side, as .npy files on disk.

    Keyed by absolute path, mtime, size, resize side and interpolation, so an edited photo
    or a backbone with other preprocessing never reads a stale entry.
    """

    def __init__(self, root: Path | None = None, enabled: bool = True):
        self.root = Path(root or default_cache_dir()) / "images"
        self.enabled = enabled

    def key(self, path: Path, pp: Preprocess) -> Path:
        st = path.stat()
        raw = f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{pp.resize}|{pp.interpolation}|v1"
        h = hashlib.sha1(raw.encode()).hexdigest()
        return self.root / h[:2] / f"{h}.npy"

    def load(self, path: Path, pp: Preprocess) -> Image.Image:
        """The image resized to ``pp.resize`` (decoding only on a cache miss)."""
        if not self.enabled:
            return pp.resize_image(load_image(path))
        k = self.key(path, pp)
        try:
            return Image.fromarray(np.load(k, allow_pickle=False))
        except (FileNotFoundError, ValueError, OSError, EOFError):
            pass
        img = pp.resize_image(load_image(path))
        k.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(k, durable=False) as tmp:  # a torn entry fails np.load and is decoded again
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(img, dtype=np.uint8), allow_pickle=False)
        return img

    def frames(self, samples: Sequence[Sample], pp: Preprocess) -> np.ndarray:
        """The samples resized and center-cropped: uint8 [N, crop, crop, 3] (``pp.normalize`` makes inputs)."""
        return np.stack([pp.center_crop(np.asarray(self.load(s.path, pp), np.uint8)) for s in samples])


def validate(samples: Sequence[Sample], pp: Preprocess, cache: ImageCache, *,
             workers: int | None = None, progress: Callable[[int], None] | None = None,
             where: str = "") -> tuple[list[Sample], dict[str, int]]:
    """Decode every sample once (filling the cache); drop the unreadable ones.

    Returns the readable samples and a reason -> count dict. One warning names the count and
    the first bad file, never one line per file.
    """
    def check(s: Sample):
        try:
            cache.load(s.path, pp)
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

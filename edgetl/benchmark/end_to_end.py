"""End to end: what a camera delivers -> label through the device runtime's own code, with each stage's time.

What a camera delivers: encoded photos as stored (``--data``), synthetic JPEG frames, or, with a frame
size (``--frame-size``, a target's ``resolution``), camera frames of that size, raw (uint8 HxWx3) or
MJPEG (the JPEG bytes a USB camera sends); the camera rig is fed the same frames."""
from __future__ import annotations

import io
import itertools
import logging

import numpy as np

from .._progress import Progress
from ..config import BenchConfig, FrameSource
from ..data.imagefolder import bench_samples
from ..errors import RuntimeInputError
from ..runtime import STAGES
from ..runtime.preprocess import load_image
from ..runtime.timing import interleaved, latency_stats
from .model_rows import model_call

log = logging.getLogger(__name__)


def synthetic_jpegs(n: int = 8, size: tuple[int, int] = (640, 480), quality: int = 90) -> list[bytes]:
    """Camera-like JPEG frames with no dataset: smooth random scenes, upsampled, as a camera encodes them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def encoded_images(cfg: BenchConfig, n: int = 16) -> tuple[list[bytes], list[np.ndarray], str]:
    """Encoded images (as files store them) for the end-to-end rows, the same decoded (the camera rig's
    frames), and where they came from. Each is decoded once: unreadable files are skipped."""
    blobs, frames = [], []
    if cfg.data is not None:
        samples = bench_samples(cfg.data, cfg.max_images)[0]
        for s in samples[:: max(1, len(samples) // n)]:
            b = s.path.read_bytes()
            try:
                frames.append(np.asarray(load_image(b)))
            except RuntimeInputError:
                continue
            blobs.append(b)
            if len(blobs) == n:
                break
        if blobs:
            sizes = ", ".join(f"{f.shape[1]}x{f.shape[0]}" for f in frames[:4])
            return blobs, frames, (f"{len(blobs)} photos of {cfg.data} as stored "
                                   f"({np.mean([len(b) for b in blobs]) / 1e3:.0f} KB on average; e.g. {sizes})")
    blobs = synthetic_jpegs()
    return blobs, [np.asarray(load_image(b)) for b in blobs], (
        f"{len(blobs)} synthetic 640x480 JPEG frames (quality 90, {np.mean([len(b) for b in blobs]) / 1e3:.0f} "
        f"KB on average): pass --data for real photos")


def camera_frames(decoded: list[np.ndarray], size: tuple[int, int], source: FrameSource,
                  quality: int = 90) -> list:
    """Each image scaled to cover ``size`` (width, height) and center-cropped to it: the pixel count a camera
    delivers, real content. ``raw``: uint8 HxWx3 arrays; ``mjpeg``: their JPEG bytes (quality 90)."""
    from PIL import Image

    out = []
    for a in decoded:
        img = Image.fromarray(a)
        w, h = size
        s = max(w / img.width, h / img.height)
        nw, nh = max(w, round(img.width * s)), max(h, round(img.height * s))
        left, top = (nw - w) // 2, (nh - h) // 2
        img = img.resize((nw, nh), Image.Resampling.BILINEAR).crop((left, top, left + w, top + h))
        if source == FrameSource.mjpeg:
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=quality)
            out.append(buf.getvalue())
        else:
            out.append(np.asarray(img))
    return out


def rig_inputs(cfg: BenchConfig, size: tuple[int, int] | None, blobs: list[bytes], decoded: list[np.ndarray],
               source_line: str) -> tuple[list, list, str]:
    """(the end-to-end rows' inputs, the camera rig's frames, a line saying what they are). With a frame
    size both are camera frames of that size in the --frames form; without, the end-to-end rows take the
    encoded images as stored and the rig their decoded frames (--frames raw) or their bytes (mjpeg)."""
    if size is None:
        if cfg.frames == FrameSource.mjpeg:
            return blobs, blobs, f"{source_line}; the camera rig takes their JPEG bytes (--frames mjpeg)"
        return blobs, decoded, f"{source_line}; the camera rig takes them decoded (--frames raw)"
    frames = camera_frames(decoded, size, cfg.frames)
    kind = "JPEG bytes, quality 90, decoded by the worker (--frames mjpeg)" if cfg.frames == FrameSource.mjpeg \
        else "raw uint8 frames (--frames raw)"
    return frames, frames, f"{len(frames)} camera frames of {size[0]}x{size[1]} ({kind}) made from {source_line}"


def end_to_end_rows(predictors: dict, images: list[bytes], cfg: BenchConfig, progress: Progress) -> dict:
    """Camera input -> label per variant through the runtime's own code (Predictor.predict_staged), with what
    each stage took, and the model alone on that input's tensor in the same interleaved rounds: their ratio
    (``vs_model``) is what end to end costs over the model, free of the drift between the bench's phases."""
    names = list(predictors)
    stages: dict[str, list[dict]] = {v: [] for v in names}
    fns = [(lambda p=p, it=itertools.cycle(images): p.predict_staged(next(it))) for p in predictors.values()]
    fns += [model_call(p, p.prepare(images[0])) for p in predictors.values()]
    with progress.task(f"end-to-end, {len(names)} variant(s), interleaved with the model alone", total=None):
        # blocks of min_runs/3 calls (an image is ms, not us: a time budget would make short benches long)
        samples = interleaved(fns, rounds=3, calls=-(-cfg.min_runs // 3), warmup=min(cfg.warmup, 5),
                              min_runs=cfg.min_runs, min_time=cfg.min_time,
                              on_call=lambda i, res: stages[names[i]].append(res[1]) if i < len(names) else None)
    rows = {}
    for k, v in enumerate(names):
        ts, alone = samples[k], samples[len(names) + k]
        mean = float(np.mean(ts))
        st = {s: [d[s] for d in stages[v]] for s in STAGES}
        means = {s: float(np.mean(st[s])) for s in STAGES}
        lat, model = latency_stats(ts, 1), latency_stats(alone, 1)
        rows[v] = {"latency": lat, "samples_ms": [round(t, 4) for t in ts],
                   "stages_mean_ms": means, "stages_p50_ms": {s: float(np.median(st[s])) for s in STAGES},
                   "shares": {s: means[s] / mean for s in STAGES}, "model_share": means["run"] / mean,
                   "unaccounted_ms": mean - sum(means.values()),
                   "model_same_rounds": model, "vs_model": lat["p50_ms"] / model["p50_ms"]}
    return rows

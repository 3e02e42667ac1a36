"""Serving a camera rig: how the streams share sessions and cores, chosen by measuring each way.

    rig = rig_for_variant(make, "int8", frames, target, threads=2, cfg=cfg, progress=progress)
    rig["serving"], rig["repeats"], rig["pass"]       # the worst of cfg.repeats full runs
    best = streams_max(make, "int8", frames, target, threads=2, cfg=cfg, progress=progress)

The ways (``SERVING``), each a set of workers for ``edgetl.benchmark.rig``:

- ``shared``: a worker per stream, one session for all, every core for its intra-op threads;
- ``per-stream``: a worker and a session per stream, the cores split between them;
- ``pool``: a worker per core, each with its own 1-thread session and onnxruntime's spin-wait off,
  taking the stream whose newest frame has waited longest (the cores, not the cameras, set the workers);
  OpenCV's resize (the 'opencv' resampler) gets one thread too, as in ``per-stream`` its session's count;
- ``batch``: one worker with every core, running the newest frame of every stream that has one in a
  single call (cross-stream micro-batching).

Each is probed for two short runs (in order, then in reverse); the one that misses fewest frames over both
(then the lowest worst-stream p99) runs ``cfg.repeats`` times for ``cfg.rig_seconds``, and the verdict is the
worst repeat's.
"""
from __future__ import annotations

import functools
from typing import Callable

from .._progress import Progress
from ..config import BenchConfig, Trigger
from ..runtime.preprocess import opencv_threads
from ..targets import Target
from .rig import camera_rig, rig_summary

SERVING = ("shared", "per-stream", "pool", "batch")


def _ways(make: Callable, v: str, n: int, threads: int) -> dict[str, tuple[str, int, Callable[[], list]]]:
    """serving -> (rig mode, threads per session, a builder of the workers' callables)."""
    per = max(1, threads // n)
    shared = functools.cache(lambda: make(v, threads))  # one session for every way that wants all the cores
    ways = {"shared": ("per-stream", threads, lambda: [shared().predict] * n)}
    if n > 1:  # (one stream: per-stream is shared, batch is a batch of one)
        ways["per-stream"] = ("per-stream", per, lambda: [make(v, per, spinning=n * per <= threads).predict
                                                          for _ in range(n)])
        if threads > 1:
            ways["pool"] = ("pool", 1, lambda: [make(v, 1, spinning=False).predict for _ in range(threads)])
        ways["batch"] = ("batch", threads, lambda: [shared().predict])
    return ways


def _run(fns: list, frames: list, target: Target, n: int, mode: str, cfg: BenchConfig, *, seconds: float,
         per: int | None = None) -> dict:
    """One rig run; ``per``: the threads each worker's session has, which its OpenCV resize gets too (a worker
    per camera or per core; the ways with one session for every core leave OpenCV's default)."""
    with opencv_threads(per):
        return camera_rig(fns, frames, streams=n, fps=target.fps, deadline_ms=target.deadline_ms, seconds=seconds,
                          mode=mode, trigger=Trigger(cfg.trigger).value)


def _cv_threads(way: str, per: int) -> int | None:
    return per if way in ("per-stream", "pool") else None


def _worse_p99(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(a, b)


def _key(r: dict) -> tuple:
    return r["missed"], r["worst_p99_ms"] if r["worst_p99_ms"] is not None else float("inf")


def rig_for_variant(make: Callable, v: str, frames: list, target: Target, threads: int, cfg: BenchConfig, *,
                    progress: Progress, streams: int | None = None, repeats: int | None = None) -> dict:
    """Probe every serving way, then ``repeats`` full runs of the best; the worst run is the result."""
    n = streams or target.streams
    repeats = cfg.repeats if repeats is None else repeats
    probe_s = min(2.0, max(0.25, cfg.rig_seconds / 4))
    ways, probes, fns = _ways(make, v, n, threads), {}, {}
    with progress.task(f"camera rig {v}: {n} stream(s) at {target.fps:g} FPS", total=None):
        # two passes, the second in reverse order, each way judged by the sum of its misses and the worse p99:
        # one short probe on a busy or drifting host can crown a way that then misses hundreds of frames
        order = list(ways)
        for way in order + order[::-1] * (len(order) > 1):
            mode, per, build = ways[way]
            if way not in fns:
                fns[way] = build()
            r = _run(fns[way], frames, target, n, mode, cfg, seconds=probe_s, per=_cv_threads(way, per))
            p = probes.setdefault(way, {"worst_p99_ms": r["worst_p99_ms"], "missed": 0, "captured": 0,
                                        "threads_per_session": per, "workers": len(fns[way]), "mode": mode})
            p["missed"] += r["missed"]
            p["captured"] += r["captured"]
            p["worst_p99_ms"] = _worse_p99(p["worst_p99_ms"], r["worst_p99_ms"])
        way = min(probes, key=lambda w: _key(probes[w]))
        runs = [_run(fns[way], frames, target, n, ways[way][0], cfg, seconds=cfg.rig_seconds,
                     per=_cv_threads(way, ways[way][1])) for _ in range(repeats)]
    worst = max(runs, key=_key)
    worst.update(
        serving=way, threads_per_session=probes[way]["threads_per_session"], probes=probes, probe_seconds=probe_s,
        repeats=[{"missed": r["missed"], "worst_p99_ms": r["worst_p99_ms"], "pass": r["pass"]} for r in runs],
        spread={"missed": [min(r["missed"] for r in runs), max(r["missed"] for r in runs)],
                "worst_p99_ms": [min(r["worst_p99_ms"] or float("inf") for r in runs),
                                 max(r["worst_p99_ms"] or float("inf") for r in runs)]},
        per_frame="Predictor.predict on each camera input (decode for MJPEG, resize, crop, normalize, run, softmax)")
    worst["pass"] = all(r["pass"] for r in runs)
    spread = (f"; {len(runs)} runs: missed {worst['spread']['missed'][0]}-{worst['spread']['missed'][1]}, worst p99 "
              f"{worst['spread']['worst_p99_ms'][0]:.1f}-{worst['spread']['worst_p99_ms'][1]:.1f} ms"
              if len(runs) > 1 else "")
    worst["summary"] = f"{rig_summary(worst)} (worst run); serving: {way}{spread}"
    return worst


def streams_max(make: Callable, v: str, frames: list, target: Target, threads: int, cfg: BenchConfig, *,
                progress: Progress, limit: int = 64) -> dict:
    """The most streams that PASS at the target's FPS and deadline: doubling from 1 until a FAIL, then
    bisecting; each count gets its own serving probe and one full run (``cfg.rig_seconds``)."""
    tried: dict[int, dict] = {}

    def passes(n: int) -> bool:
        r = rig_for_variant(make, v, frames, target, threads, cfg, progress=progress, streams=n, repeats=1)
        tried[n] = {"pass": r["pass"], "missed": r["missed"], "captured": r["captured"],
                    "worst_p99_ms": r["worst_p99_ms"], "serving": r["serving"]}
        return r["pass"]

    lo, hi = 0, None  # lo passes (0: none yet), hi fails
    n = 1
    while n <= limit and passes(n):
        lo, n = n, n * 2
    hi = min(n, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    return {"streams_max": lo, "tried": {str(k): tried[k] for k in sorted(tried)},
            "summary": (f"{lo} stream(s) sustained at {target.fps:g} FPS within {target.deadline_ms:g} ms"
                        if lo else f"not even 1 stream at {target.fps:g} FPS within {target.deadline_ms:g} ms"),
            "serving": tried[lo]["serving"] if lo else None}

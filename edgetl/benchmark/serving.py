"""Serving a camera rig: which sessions the streams share, chosen by measuring each way."""
from __future__ import annotations

from .._progress import Progress
from ..config import BenchConfig
from .rig import camera_rig, rig_summary
from ..targets import Target


def rig_for_variant(make, v: str, frames: list, target: Target, threads: int, cfg: BenchConfig, *,
                progress: Progress) -> dict:
    """The rig with one session shared by every stream, and with one session per stream (the threads
    split between them); a short probe of each, then the full run on whichever missed fewer frames."""
    n = target.streams
    per = max(1, threads // n)
    modes = {"shared": lambda: [make(v, threads).predict] * n}
    if n > 1:  # (one stream: the two are the same)
        modes["per-stream"] = lambda: [make(v, per).predict for _ in range(n)]
    probe_s = min(2.0, max(0.25, cfg.rig_seconds / 4))
    probes, fns = {}, {}
    with progress.task(f"camera rig {v}: {n} streams at {target.fps:g} FPS", total=None):
        for mode, build in modes.items():
            fns[mode] = build()
            r = camera_rig(fns[mode], frames, fps=target.fps, deadline_ms=target.deadline_ms, seconds=probe_s)
            probes[mode] = {"worst_p99_ms": r["worst_p99_ms"], "missed": r["missed"], "captured": r["captured"],
                            "threads_per_session": threads if mode == "shared" else per}
        mode = min(probes, key=lambda m: (probes[m]["missed"], probes[m]["worst_p99_ms"] or float("inf")))
        rig = camera_rig(fns[mode], frames, fps=target.fps, deadline_ms=target.deadline_ms, seconds=cfg.rig_seconds)
    rig.update(mode=mode, threads_per_session=probes[mode]["threads_per_session"], probes=probes, probe_seconds=probe_s,
               per_frame="Predictor.predict on a decoded camera frame (resize, crop, normalize, run, softmax)")
    rig["summary"] = f"{rig_summary(rig)}; {mode} session(s)"
    return rig

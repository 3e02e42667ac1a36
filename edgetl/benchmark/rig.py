"""The camera rig: concurrent camera streams timed the way a robot runs them.

    from edgetl.benchmark.rig import camera_rig
    rig = camera_rig([p.predict] * 3, frames, fps=30, deadline_ms=33.3, seconds=10)   # one shared Predictor
    rig["streams"][0]["p99_ms"], rig["missed"], rig["pass"]

**Camera rig.** N cameras capture a frame every 1/FPS s, all at the same instants (hardware-synchronised
cameras: the worst case for contention). Each stream has one worker thread that runs its callable on the
newest frame captured when it is free (closed loop, as a camera driver keeps the latest frame): a frame
captured while the worker was busy and replaced by a newer one is *dropped*; a frame answered more than
the deadline after its capture is *late*. Latency is capture -> answer, queueing included. A stream
passes when at least 99% of its captured frames were answered within the deadline (dropped frames count
as misses: its p99 over every captured frame meets the deadline); the rig passes when every stream does.

numpy only, plus whatever the callables run (onnxruntime): the device side uses this module.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, Sequence

import numpy as np

MAX_MISSED = 0.01  # a stream passes with at most 1% of its frames dropped or late (p99 meets the deadline)


def _stream(fn: Callable, frames: Sequence, offset: int, out: dict, *, t0: float, captured: int,
            period: float) -> None:
    """One camera's worker: the newest captured frame whenever it is free, until the run's ``captured``
    frames are each answered or replaced (the last one is answered even when that ends after the run)."""
    rec, k = [], 0
    try:
        while k < captured:
            now = time.perf_counter()
            newest = min(math.floor((now - t0) / period), captured - 1)  # -1 before the first capture
            if newest < k:  # the next frame is not captured yet
                time.sleep(max(0.0, t0 + k * period - now))
                continue
            k = newest  # frames k..newest-1 were replaced before the worker was free: dropped
            capture = t0 + k * period
            fn(frames[(offset + k) % len(frames)])
            rec.append((capture - t0, (time.perf_counter() - capture) * 1e3))
            k += 1
    except BaseException as e:  # re-raised by camera_rig in the caller's thread
        out["error"] = e
    out["records"] = rec


def camera_rig(stream_fns: Sequence[Callable], frames: Sequence, *, fps: float, deadline_ms: float,
               seconds: float, warmup: int = 3) -> dict:
    """Run ``len(stream_fns)`` concurrent camera streams (stream i calls ``stream_fns[i](frame)``)."""
    n, period = len(stream_fns), 1.0 / fps
    for fn in dict.fromkeys(stream_fns):  # untimed: the first calls allocate (once per distinct callable)
        for i in range(warmup):
            fn(frames[i % len(frames)])
    t0 = time.perf_counter() + 0.02  # every thread started before the first capture
    captured = math.ceil(seconds * fps - 1e-9)  # frames k with t0 + k*period < t0 + seconds
    outs = [{} for _ in range(n)]
    threads = [threading.Thread(target=_stream, args=(fn, frames, i, outs[i]), daemon=True,
                                kwargs={"t0": t0, "captured": captured, "period": period})
               for i, fn in enumerate(stream_fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for o in outs:
        if "error" in o:
            raise o["error"]
    streams = []
    for i, o in enumerate(outs):
        lat = np.array([r[1] for r in o["records"]], dtype=np.float64)
        late = int(np.sum(lat > deadline_ms))
        dropped = max(0, captured - len(lat))
        missed = dropped + late
        streams.append({
            "stream": i, "captured": captured, "answered": int(len(lat)), "dropped": dropped, "late": late,
            "missed": missed, "missed_share": missed / captured if captured else 0.0,
            "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
            "max_ms": float(lat.max()) if lat.size else None,
            "fps": len(lat) / seconds, "pass": bool(lat.size and missed <= MAX_MISSED * captured),
            "samples": [[round(t, 4), round(ms, 3)] for t, ms in o["records"]],
        })
    worst = max((s["p99_ms"] for s in streams if s["p99_ms"] is not None), default=None)
    return {"streams_n": n, "fps": fps, "deadline_ms": deadline_ms, "seconds": seconds, "streams": streams,
            "worst_p99_ms": worst, "missed": sum(s["missed"] for s in streams),
            "captured": captured * n, "pass": all(s["pass"] for s in streams)}


def rig_summary(rig: dict) -> str:
    """'3 streams at 30 FPS: worst p99 21.3 ms, 0 of 900 frames missed (0 dropped, 0 late): PASS'."""
    dropped = sum(s["dropped"] for s in rig["streams"])
    late = sum(s["late"] for s in rig["streams"])
    worst = "no frame answered" if rig["worst_p99_ms"] is None else f"worst-stream p99 {rig['worst_p99_ms']:.1f} ms"
    return (f"{rig['streams_n']} stream(s) at {rig['fps']:g} FPS for {rig['seconds']:g} s: {worst} (deadline "
            f"{rig['deadline_ms']:g} ms), {rig['missed']} of {rig['captured']} frames missed ({dropped} dropped, "
            f"{late} late): {'PASS' if rig['pass'] else 'FAIL'}")

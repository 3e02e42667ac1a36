"""The camera rig: concurrent camera streams timed the way a robot runs them.

    from edgetl.benchmark.rig import camera_rig
    rig = camera_rig([p.predict] * 3, frames, fps=30, deadline_ms=33.3, seconds=10)   # a worker per stream
    rig = camera_rig(workers, frames, streams=6, fps=30, deadline_ms=33.3, seconds=10, mode="pool")
    rig["streams"][0]["p99_ms"], rig["missed"], rig["pass"]

**Cameras.** N cameras capture a frame every 1/FPS s: all at the same instants (``trigger="synced"``,
hardware-synchronised cameras, the worst case for contention) or with phases spread over the period
(``"staggered"``, free-running cameras). A camera keeps only its newest frame, as a driver does: a frame
replaced by a newer one before a worker took it is *dropped*; a frame answered more than the deadline
after its capture is *late*. Latency is capture -> answer, queueing included. A stream passes when at
least 99% of its captured frames were answered within the deadline (dropped frames count as misses: its
p99 over every captured frame meets the deadline); the rig passes when every stream does.

**Workers** (``mode``): ``per-stream``, one worker per camera, calling ``fns[i](frame)``; ``pool``, W
workers (``fns``) each taking the stream whose newest frame has waited longest (ties: the stream served
least recently), one frame per call;
``batch``, W workers each taking the newest frame of every stream that has one (after waiting up to
``window_ms`` for more) in one call ``fn([frame, ...])`` -- the cross-stream micro-batching of
DeepStream's muxer and Triton's dynamic batcher.

numpy only, plus whatever the callables run (onnxruntime): a device runs it.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, Sequence

import numpy as np

MAX_MISSED = 0.01  # a stream passes with at most 1% of its frames dropped or late (p99 meets the deadline)
MODES = ("per-stream", "pool", "batch")
TRIGGERS = ("synced", "staggered")


class _Cameras:
    """The streams' capture clocks and what has been taken from them (shared by the workers, under a lock)."""

    def __init__(self, n: int, *, t0: float, period: float, captured: int, phases: Sequence[float]):
        self.n, self.t0, self.period, self.captured, self.phases = n, t0, period, captured, list(phases)
        self.next = [0] * n  # the first frame of each stream not yet taken or dropped
        self.busy = [False] * n  # a frame of the stream is being answered (its newer ones wait, as on a driver)
        self.served = [0] * n  # when each stream was last taken (ties go to the one waiting longest: round robin)
        self.turn = 0
        self.records: list[list[tuple[float, float]]] = [[] for _ in range(n)]
        self.cond = threading.Condition()

    def capture_time(self, s: int, k: int) -> float:
        return self.t0 + self.phases[s] + k * self.period

    def newest(self, s: int, now: float) -> int:
        """The newest frame stream ``s`` has captured by ``now`` (-1 before its first)."""
        return min(math.floor((now - self.t0 - self.phases[s]) / self.period), self.captured - 1)

    def take(self, allowed: Sequence[int], batch: bool) -> tuple[list[tuple[int, int]], float]:
        """(frames taken as (stream, index), seconds to wait when none is ready). Caller holds the lock."""
        now = time.perf_counter()
        ready = [(s, self.newest(s, now)) for s in allowed if not self.busy[s] and self.next[s] < self.captured]
        pending = [(s, k) for s, k in ready if k >= self.next[s]]
        if not pending:
            waits = [self.capture_time(s, self.next[s]) - now for s, _ in ready]
            return [], max(0.0, min(waits)) if waits else 0.002
        if not batch:  # the newest frame that has waited longest across the streams
            pending = [min(pending, key=lambda sk: (self.capture_time(*sk), self.served[sk[0]]))]
        for s, k in pending:  # frames next..k-1 were replaced before a worker was free: dropped
            self.busy[s], self.next[s] = True, k + 1
            self.turn += 1
            self.served[s] = self.turn
        return pending, 0.0

    def answer(self, taken: list[tuple[int, int]], t: float) -> None:
        for s, k in taken:
            cap = self.capture_time(s, k)
            self.records[s].append((cap - self.t0, (t - cap) * 1e3))
            self.busy[s] = False


def _worker(fn: Callable, frames: Sequence, cams: _Cameras, allowed: Sequence[int], *, batch: bool,
            window_s: float, out: dict) -> None:
    taken: list[tuple[int, int]] = []
    try:
        while True:
            with cams.cond:
                if not any(cams.next[s] < cams.captured or cams.busy[s] for s in allowed):
                    cams.cond.notify_all()
                    return
                taken, wait = cams.take(allowed, batch)
                if not taken:
                    cams.cond.wait(timeout=max(wait, 1e-4))
                    continue
            if batch and window_s > 0 and len(taken) < len(allowed):  # a short window for the other cameras
                time.sleep(window_s)
                with cams.cond:
                    more, _ = cams.take(allowed, True)
                taken += more
            items = [frames[(s + k) % len(frames)] for s, k in taken]
            fn(items) if batch else fn(items[0])
            t = time.perf_counter()
            with cams.cond:
                cams.answer(taken, t)
                cams.cond.notify_all()
    except BaseException as e:  # re-raised by camera_rig in the caller's thread
        out["error"] = e
        with cams.cond:
            for s, _ in taken:
                cams.busy[s] = False
            cams.next = [cams.captured] * cams.n  # stop the other workers too
            cams.cond.notify_all()


def phases_for(trigger: str, n: int, period: float) -> list[float]:
    """Each camera's capture offset: all at once (synced), or spread evenly over the period (staggered)."""
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger {trigger!r}: use one of {', '.join(TRIGGERS)}")
    return [0.0] * n if trigger == "synced" else [i * period / n for i in range(n)]


def camera_rig(fns: Sequence[Callable], frames: Sequence, *, fps: float, deadline_ms: float, seconds: float,
               streams: int | None = None, mode: str = "per-stream", trigger: str = "synced",
               window_ms: float = 0.0, warmup: int = 3) -> dict:
    """Run ``streams`` concurrent camera streams served by the workers ``fns`` (see the module docstring).

    ``per-stream``: ``fns[i]`` serves stream i (``streams`` = len(fns)); ``pool``/``batch``: any worker any
    stream. Stream i's frame k is ``frames[(i + k) % len(frames)]``."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: use one of {', '.join(MODES)}")
    n = len(fns) if mode == "per-stream" else int(streams or len(fns))
    if mode == "per-stream" and streams not in (None, n):
        raise ValueError(f"per-stream mode takes one callable per stream: {len(fns)} callables, {streams} streams")
    if fps <= 0 or seconds <= 0 or n < 1:
        raise ValueError(f"a rig needs fps > 0, seconds > 0 and at least one stream (fps={fps}, seconds={seconds}, "
                         f"streams={n})")
    batch, period = mode == "batch", 1.0 / fps
    for fn in dict.fromkeys(fns):  # untimed: the first calls allocate (once per distinct callable)
        for i in range(warmup):
            fn([frames[i % len(frames)]] * min(n, 2)) if batch else fn(frames[i % len(frames)])
    captured = math.ceil(seconds * fps - 1e-9)  # frames k with t0 + k*period < t0 + seconds
    cams = _Cameras(n, t0=time.perf_counter() + 0.02, period=period, captured=captured,  # (threads start first)
                    phases=phases_for(trigger, n, period))
    outs = [{} for _ in fns]
    allowed = [[i] for i in range(n)] if mode == "per-stream" else [list(range(n))] * len(fns)
    threads = [threading.Thread(target=_worker, args=(fn, frames, cams, allowed[i], ), daemon=True,
                                kwargs={"batch": batch, "window_s": window_ms / 1e3, "out": outs[i]})
               for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for o in outs:
        if "error" in o:
            raise o["error"]
    out = _summary(cams, fps=fps, deadline_ms=deadline_ms, seconds=seconds)
    out.update(mode=mode, trigger=trigger, workers=len(fns), window_ms=window_ms if batch else None)
    return out


def _summary(cams: _Cameras, *, fps: float, deadline_ms: float, seconds: float) -> dict:
    streams = []
    captured = cams.captured
    for i, rec in enumerate(cams.records):
        lat = np.array([r[1] for r in rec], dtype=np.float64)
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
            "samples": [[round(t, 4), round(ms, 3)] for t, ms in sorted(rec)],
        })
    worst = max((s["p99_ms"] for s in streams if s["p99_ms"] is not None), default=None)
    return {"streams_n": cams.n, "fps": fps, "deadline_ms": deadline_ms, "seconds": seconds, "streams": streams,
            "worst_p99_ms": worst, "missed": sum(s["missed"] for s in streams),
            "captured": captured * cams.n, "pass": all(s["pass"] for s in streams)}


def rig_summary(rig: dict) -> str:
    """'3 streams at 30 FPS: worst p99 21.3 ms, 0 of 900 frames missed (0 dropped, 0 late): PASS'."""
    dropped = sum(s["dropped"] for s in rig["streams"])
    late = sum(s["late"] for s in rig["streams"])
    worst = "no frame answered" if rig["worst_p99_ms"] is None else f"worst-stream p99 {rig['worst_p99_ms']:.1f} ms"
    return (f"{rig['streams_n']} stream(s) at {rig['fps']:g} FPS for {rig['seconds']:g} s: {worst} (deadline "
            f"{rig['deadline_ms']:g} ms), {rig['missed']} of {rig['captured']} frames missed ({dropped} dropped, "
            f"{late} late): {'PASS' if rig['pass'] else 'FAIL'}")

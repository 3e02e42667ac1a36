"""Every latency measurement edgetl makes: one timing loop, and interleaved rounds for comparisons.

    from edgetl.runtime.timing import interleaved_latency, time_calls, latency_stats
    ms = time_calls(lambda: sess.run(None, feed), warmup=10, min_runs=50, min_time=2.0)   # [ms per call]
    latency_stats(ms, batch=1)["p50_ms"]
    fp32_ms, int8_ms = interleaved_latency(["model.onnx", "model.int8.onnx"], x, threads=2)

numpy + onnxruntime only (the device side uses it). Two models timed one after the other see
different CPUs on a shared or throttling machine (identical models differed by up to 15% here);
timed in interleaved rounds (A B C, B C A, C A B, ...) every model sees the same drift, so their
ratio holds even when the absolute figures move.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np


def time_calls(fn: Callable[[], object], *, warmup: int = 5, min_runs: int = 30, min_time: float = 0.0) -> list[float]:
    """Warm up, then call until both ``min_runs`` calls and ``min_time`` seconds are done; ms per call."""
    for _ in range(warmup):
        fn()
    ts: list[float] = []
    t_end = time.perf_counter() + min_time
    while len(ts) < min_runs or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return ts


def interleaved(fns: Sequence[Callable[[], object]], *, rounds: int = 7, calls: int | None = None,
                budget_s: float = 0.25, warmup: int = 3, min_runs: int = 0, min_time: float = 0.0,
                settle_s: float = 0.005, block_warmup: int = 2,
                on_call: Callable[[int, object], None] | None = None) -> list[list[float]]:
    """Time several callables in interleaved rounds; every timed call's ms, per callable.

    Round r runs the callables starting at index r (A B C, B C A, ...), ``calls`` timed calls each
    (default: as many as fit in ``budget_s`` for the slowest, 2..100), after a ``settle_s`` pause and
    ``block_warmup`` untimed calls: onnxruntime's worker threads spin for a while after a run, and the
    previous session's spinning threads would otherwise take cores from the one being timed (with
    six sessions that made Lite0's fp32 p50 23.7 ms against 8.0 ms alone); and the first calls after
    a switch run on caches the other model filled. Rounds continue past ``rounds`` until every
    callable has ``min_runs`` timed calls and ``min_time`` seconds of timed calls of its own.
    ``on_call(i, result)``, when given, sees what every *timed* call of callable i returned.
    """
    slowest = 1e-4
    for fn in fns:
        t = time.perf_counter()
        for _ in range(warmup):
            fn()
        slowest = max(slowest, (time.perf_counter() - t) / max(warmup, 1))
    calls = calls or max(2, min(100, int(budget_s / slowest)))
    times: list[list[float]] = [[] for _ in fns]
    spent = [0.0] * len(fns)
    r = 0
    while r < rounds or min(len(t) for t in times) < min_runs or min(spent) < min_time * 1e3:
        for k in range(len(fns)):
            i = (r + k) % len(fns)
            time.sleep(settle_s)  # let the previous session's threads stop spinning
            for _ in range(block_warmup):
                fns[i]()  # untimed
            for _ in range(calls):
                t = time.perf_counter()
                res = fns[i]()
                ms = (time.perf_counter() - t) * 1e3
                if on_call is not None:
                    on_call(i, res)
                times[i].append(ms)
                spent[i] += ms
        r += 1
    return times


def session_runner(model: Path | str | bytes, x: np.ndarray, threads: int = 0, providers=None) -> Callable[[], object]:
    """A zero-argument call of ``model`` on ``x`` in its own onnxruntime session."""
    from . import ort_session

    s = ort_session(model if isinstance(model, bytes) else Path(model), threads, providers)
    feed = {s.get_inputs()[0].name: x}
    return lambda: s.run(None, feed)


def interleaved_latency(models: Sequence, x: np.ndarray, *, rounds: int = 7, threads: int = 0,
                        budget_s: float = 0.25, providers=None) -> list[float]:
    """Median ms per call of each ONNX model (path or bytes) on ``x``, timed in interleaved rounds."""
    fns = [session_runner(m, x, threads, providers) for m in models]
    return [float(np.median(t)) for t in interleaved(fns, rounds=rounds, budget_s=budget_s)]


def latency_stats(ts: Sequence[float], batch: int) -> dict:
    """p50/p90/p99, mean, std, CV and throughput of per-call latencies (ms)."""
    a = np.asarray(ts, dtype=np.float64)
    mean = float(a.mean())
    return {"runs": int(a.size), "batch": batch, "p50_ms": float(np.percentile(a, 50)),
            "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": mean,
            "std_ms": float(a.std()), "cv": float(a.std() / mean) if mean else 0.0,
            "throughput_ips": float(batch * 1e3 / mean) if mean else 0.0}

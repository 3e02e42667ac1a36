"""The model alone: every variant timed on the same prepared batch in interleaved rounds, and the
offline (throughput over batch sizes) sweep."""
from __future__ import annotations

import logging
import time

import numpy as np

from .._progress import Progress
from ..config import BenchConfig
from ..runtime import Predictor, ort_session
from ..runtime.timing import interleaved, latency_stats, time_calls
from .torch_ref import TorchReference

log = logging.getLogger(__name__)


def random_batch(p: Predictor, n: int) -> np.ndarray:
    shape = tuple(d if isinstance(d, int) else 1 for d in p.input_shape[1:])
    rng = np.random.default_rng(0)
    if p.embed:
        return rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return rng.standard_normal((n, *shape)).astype(np.float32)


def model_call(p: Predictor, x: np.ndarray):
    """A zero-argument call of ``p``'s session on the prepared batch ``x`` (the model alone)."""
    sess, feed = p.session, {p.input_name: x}
    return lambda: sess.run(None, feed)


def time_variants(predictors: dict, files: dict, x: np.ndarray, cfg: BenchConfig, *, threads: int,
                   torch_ref: TorchReference, progress: Progress) -> dict:
    """Every variant (and the torch reference) timed in interleaved rounds on the same batch."""
    rows, fns = {}, []
    for v, p in predictors.items():
        t0 = time.perf_counter()
        ort_session(p.model_path, threads, p.providers)  # what loading costs on its own (the bench reuses p's)
        rows[v] = {"file": str(files[v]), "size_mb": files[v].stat().st_size / 1e6,
                   "session_create_ms": (time.perf_counter() - t0) * 1e3, "providers_used": p.providers}
        fns.append(model_call(p, x))
    names = list(rows)
    caller_threads = None
    try:
        if torch_ref.run is not None:
            import torch

            caller_threads = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            fns.append(torch_ref.run)
            names.append("torch")
            rows["torch"] = {"file": str(torch_ref.ck_path), "size_mb": torch_ref.ck_path.stat().st_size / 1e6,
                             "session_create_ms": None, "providers_used": [f"torch {torch.__version__} eager CPU"]}
        with progress.task(f"timing {len(fns)} variant(s), interleaved", total=None):
            # blocks of ~0.5 s: a robot runs one model back to back, so the first calls after a switch
            # (caches the other variant filled) must be a small share of what is timed
            samples = interleaved(fns, rounds=3, warmup=cfg.warmup, min_runs=cfg.min_runs, min_time=cfg.min_time,
                                  budget_s=0.5)
    finally:
        if caller_threads is not None:  # the caller's torch keeps its own thread count
            import torch

            torch.set_num_threads(caller_threads)
    for name, ts in zip(names, samples):
        rows[name]["latency"] = latency_stats(ts, len(x))
        rows[name]["samples_ms"] = [round(t, 4) for t in ts]
    return rows


def offline_sweep(p: Predictor, cfg: BenchConfig) -> dict:
    """Best throughput over batch sizes (MLPerf offline)."""
    sweep = {}
    for b in (1, 2, 4, 8, 16):
        xb = random_batch(p, b)
        ts = time_calls(lambda: p.run(xb), warmup=2, min_runs=max(5, cfg.min_runs // 5), min_time=cfg.min_time / 4)
        sweep[b] = latency_stats(ts, b)["throughput_ips"]
    best = max(sweep, key=sweep.get)
    return {"throughput_by_batch": sweep, "best_batch": best, "best_ips": sweep[best]}
